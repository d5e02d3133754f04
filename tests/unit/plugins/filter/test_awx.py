"""The AWX filters (plugins/filter/awx.py): surveys and workflow nodes from short definitions, and the
errors that name what is wrong."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.modelops.serving.plugins.filter.awx import FilterModule

F = FilterModule().filters()
BATCH = {"variable": "rollout_batch", "question_name": "Batch", "type": "text", "required": True, "default": "34%"}
CANARY = {"variable": "rollout_canary", "question_name": "Canary", "type": "multiplechoice",
          "choices": [True, False], "default": True}


def test_survey_fills_what_awx_needs_and_keeps_the_rest():
    spec = F["awx_survey"]([BATCH, {"variable": "x", "question_name": "X"}, CANARY], "rollout", "Roll out")
    assert spec["name"] == "rollout" and spec["description"] == "Roll out"
    assert spec["spec"][0] == dict(BATCH, question_description="")
    assert spec["spec"][1] == {"variable": "x", "question_name": "X", "question_description": "", "required": False,
                               "type": "text"}
    # AWX compares answers with choices as text.
    assert spec["spec"][2]["choices"] == ["True", "False"]


@pytest.mark.parametrize("questions, words", [
    ([{"question_name": "No variable"}], ["needs a variable"]),
    ([BATCH, dict(BATCH, question_name="Again")], ["rollout_batch is asked twice"]),
    ([dict(BATCH, type="checkbox")], ["rollout_batch has type checkbox"]),
    ([dict(CANARY, choices=[])], ["rollout_canary", "needs choices"]),
    ([dict(CANARY, default="maybe")], ["default of rollout_canary", "'maybe'"]),
    ([dict(BATCH, helptext="x")], ["unknown keys: helptext"]),
    ("rollout_batch", ["must be a list"]),
])
def test_survey_refuses_what_awx_would_refuse_or_misread(questions, words):
    with pytest.raises(AnsibleFilterError) as err:
        F["awx_survey"](questions, "rollout")
    for word in words:
        assert word in str(err.value)


def test_workflow_nodes_link_templates_and_approvals():
    nodes = F["awx_workflow_nodes"]([
        {"identifier": "package", "template": "modelops: package", "success": ["approve"], "failure": ["tell"]},
        {"identifier": "approve", "approval": "Go?", "timeout": 600, "success": ["rollout"]},
        {"identifier": "rollout", "template": "modelops: rolling update", "all_parents_must_converge": 1},
        {"identifier": "tell", "template": "modelops: notify"},
    ], "modelops")
    assert nodes[0] == {
        "identifier": "package",
        "unified_job_template": {"name": "modelops: package", "type": "job_template", "organization": {"name": "modelops"}},
        "related": {"success_nodes": [{"identifier": "approve"}], "failure_nodes": [{"identifier": "tell"}],
                    "always_nodes": []}}
    assert nodes[1]["unified_job_template"] == {"name": "approve: Go?", "description": "Go?",
                                                "type": "workflow_approval", "timeout": 600}
    assert nodes[2]["all_parents_must_converge"] is True and nodes[2]["related"]["success_nodes"] == []


@pytest.mark.parametrize("nodes, words", [
    ([], ["non-empty list"]),
    ([{"template": "a"}], ["own identifier"]),
    ([{"identifier": "a", "template": "t"}, {"identifier": "a", "template": "u"}], ["own identifier"]),
    ([{"identifier": "a"}], ["node a needs either a template or an approval"]),
    ([{"identifier": "a", "template": "t", "approval": "?"}], ["node a needs either"]),
    ([{"identifier": "a", "template": "t", "success": ["b"]}], ["node a links to unknown nodes: b"]),
    ([{"identifier": "a", "template": "t", "on_success": ["b"]}], ["unknown keys: on_success"]),
])
def test_workflow_nodes_refuse_a_broken_graph(nodes, words):
    with pytest.raises(AnsibleFilterError) as err:
        F["awx_workflow_nodes"](nodes, "modelops")
    for word in words:
        assert word in str(err.value)


PROJECT = {"name": "modelops.serving", "scm_url": "https://git.example.internal/ml/site.git"}
PRODUCTION = {"production": {"name": "production", "path": "inventories/production"}}
REGISTRY_TYPE = {"name": "modelops.serving registry", "kind": "cloud", "inputs": {}, "injectors": {}}
SITE_JT = {"name": "site", "playbook": "playbooks/site.yml", "credential_kinds": ["machine", "registry"],
           "survey": []}


def assets(templates, workflows=(), **kw):
    args = dict(workflows=list(workflows), credential_types=[REGISTRY_TYPE], organization="modelops",
                project=PROJECT, inventories=PRODUCTION)
    args.update(kw)
    return F["awx_assets"](templates, **args)


def test_assets_name_the_sites_credentials_by_their_types_and_leave_out_unnamed_kinds():
    doc = assets([SITE_JT], credentials={"machine": "fleet ssh", "registry": ""})
    creds = doc["job_templates"][0]["related"]["credentials"]
    assert creds == [{"organization": {"name": "modelops", "type": "organization"}, "name": "fleet ssh",
                      "credential_type": {"name": "Machine", "kind": "ssh", "type": "credential_type"},
                      "type": "credential"}]
    doc = assets([SITE_JT], credentials={"registry": "site registry"})
    assert doc["job_templates"][0]["related"]["credentials"][0]["credential_type"]["name"] == REGISTRY_TYPE["name"]
    # No execution environment named: AWX's default (null), not a key to nothing.
    assert doc["job_templates"][0]["execution_environment"] is None


def test_assets_approval_nodes_carry_their_approval_template_and_links_use_node_keys():
    doc = assets([SITE_JT], workflows=[{"name": "wf", "nodes": [
        {"identifier": "ask", "approval": "Go?", "timeout": 60, "success": ["run"]},
        {"identifier": "run", "template": "site"}]}])
    ask, run = doc["workflow_job_templates"][0]["related"]["workflow_nodes"]
    assert ask["unified_job_template"] is None
    assert ask["related"]["create_approval_template"] == {"name": "ask: Go?", "description": "Go?", "timeout": 60}
    assert ask["related"]["success_nodes"] == [run["natural_key"]]
    assert run["unified_job_template"] == doc["job_templates"][0]["natural_key"]


@pytest.mark.parametrize("templates, kw, words", [
    ([dict(SITE_JT, environment="staging")], {}, ["site runs on the staging inventory"]),
    ([SITE_JT], {"workflows": [{"name": "wf", "nodes": [{"identifier": "a", "template": "other"}]}]},
     ["workflow wf runs other"]),
    ([SITE_JT], {"credential_types": [], "credentials": {"registry": "r"}}, ["registry credential"]),
])
def test_assets_errors_name_the_object(templates, kw, words):
    with pytest.raises(AnsibleFilterError) as err:
        assets(templates, **kw)
    for word in words:
        assert word in str(err.value)
