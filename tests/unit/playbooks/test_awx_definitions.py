"""playbooks/vars/awx.yml and playbooks/awx_configure.yml, held together with the playbooks they
launch and with the awx.awx modules that make them. No AWX server can run here (it ships only as
Kubernetes images), so these checks read the definitions:
- every job template's playbook exists and validates its options, and every survey question asks
  for an option of that playbook, with a type, default and choices the option accepts, and is
  required where the option is;
- every credential kind a template names is an option of the configure playbook, and every
  variable a credential type injects is an option of a playbook that gets that credential;
- the workflow's nodes run templates that exist;
- every argument awx_configure.yml gives an awx.awx module, and every survey and workflow node
  the filters make from the definitions, is one the module documents (ansible-doc), with its
  choices.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import jinja2
import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.modelops.serving.plugins.filter.awx import awx_survey, awx_workflow_nodes

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOKS = ROOT / "playbooks"


class Loader(yaml.SafeLoader):
    pass


Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
SPECS = yaml.safe_load((PLAYBOOKS / "vars" / "argument_specs.yml").read_text())["playbook_argument_specs"]
CONFIGURE = yaml.load((PLAYBOOKS / "awx_configure.yml").read_text(), Loader=Loader)[0]
PREFIX = CONFIGURE["vars"]["awx_prefix"]
RAW = yaml.load((PLAYBOOKS / "vars" / "awx.yml").read_text(), Loader=Loader)


def render(value):
    """The definitions with the configure playbook's awx_prefix filled in (the only template they use
    outside the credential types' injectors, which are AWX's own)."""
    if isinstance(value, str) and "awx_prefix" in value:
        return jinja2.Template(value).render(awx_prefix=PREFIX)
    if isinstance(value, list):
        return [render(v) for v in value]
    if isinstance(value, dict):
        return {k: render(v) for k, v in value.items()}
    return value


DEFS = {k: (render(v) if k != "awx_credential_types" else v) for k, v in RAW.items()}
TEMPLATES = DEFS["awx_job_templates"]
# What a survey answer is, for each option type: AWX sends text, numbers, or a list for multiselect.
SURVEY_FOR_TYPE = {"str": {"text", "textarea", "password", "multiplechoice"}, "path": {"text"},
                   "bool": {"multiplechoice"}, "int": {"integer"}, "float": {"float", "integer"},
                   "raw": {"text", "integer", "multiplechoice"}, "list": {"text", "multiselect"}}


def spec_of(template):
    return SPECS.get(Path(template["playbook"]).stem)


def validate(options: dict, values: dict):
    return ArgumentSpecValidator(options).validate(values).error_messages


def test_every_template_runs_a_playbook_that_checks_its_options():
    names = [t["name"] for t in TEMPLATES]
    assert len(set(names)) == len(names), names
    for template in TEMPLATES:
        path = ROOT / template["playbook"]
        assert path.is_file(), f"{template['name']}: {template['playbook']} does not exist"
        if template["survey"]:
            assert spec_of(template), f"{template['name']}: {template['playbook']} has no argument specs"
            assert f"playbook_argument_specs.{path.stem}.options" in path.read_text(), path


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t["name"])
def test_every_survey_question_sets_an_option_the_playbook_validates(template):
    options = (spec_of(template) or {}).get("options", {})
    asked = {q["variable"]: q for q in template["survey"]}
    for var, question in asked.items():
        assert var in options, f"{template['name']}: the survey asks for {var}, which {template['playbook']} does not take"
        option = options[var]
        assert question["type"] in SURVEY_FOR_TYPE[option.get("type", "str")], (var, question["type"], option)
        if option.get("required"):
            assert question.get("required"), f"{template['name']}: {var} is required by the playbook, not by the survey"
        for value in [question.get("default")] + list(question.get("choices", [])):
            if value not in (None, ""):
                errors = validate({var: option}, {var: value})
                assert not errors, f"{template['name']}: {var}={value!r}: {errors}"
    # A required option the survey does not ask would fail every launch.
    for name, option in options.items():
        if option.get("required") and template["survey"]:
            assert name in asked, f"{template['name']}: {template['playbook']} requires {name}, the survey does not ask it"
    awx_survey(template["survey"], template["name"], template["description"])  # raises on a malformed question


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t["name"])
def test_fixed_extra_vars_and_environments_are_ones_the_playbook_and_configure_know(template):
    """A template's fixed extra_vars are options its playbook validates, with values it accepts; its
    environment is one awx_configure.yml makes an inventory for."""
    options = (spec_of(template) or {}).get("options", {})
    for var, value in (template.get("extra_vars") or {}).items():
        assert var in options, f"{template['name']}: extra_vars sets {var}, which {template['playbook']} does not take"
        assert not validate({var: options[var]}, {var: value}), (template["name"], var, value)
    assert template.get("environment", "production") in ("production", "staging"), template["name"]
    for workflow in DEFS["awx_workflows"]:
        assert workflow.get("environment", "production") in ("production", "staging"), workflow["name"]


def test_the_promotion_workflow_stages_gates_and_asks_before_production():
    """package -> staging -> gate (promote.yml, checks only) -> approval -> promote, each on success."""
    workflow = next(w for w in DEFS["awx_workflows"] if w.get("environment") == "staging")
    by_id = {n["identifier"]: n for n in workflow["nodes"]}
    templates = {t["name"]: t for t in TEMPLATES}
    path, node = [], by_id[workflow["nodes"][0]["identifier"]]
    while node:
        path.append(node)
        nxt = node.get("success", [])
        assert len(nxt) <= 1 and not node.get("failure") and not node.get("always"), node
        node = by_id[nxt[0]] if nxt else None
    kinds = [("approval" if "approval" in n else templates[n["template"]]["playbook"].split("/")[-1],
              templates[n["template"]].get("environment", "production") if "template" in n else "",
              (templates[n["template"]].get("extra_vars") or {}).get("promote_check_only", False)
              if "template" in n else False) for n in path]
    assert kinds == [("package_models.yml", "production", False), ("rolling_update.yml", "staging", False),
                     ("promote.yml", "production", True), ("approval", "", False),
                     ("promote.yml", "production", False)], kinds
    # The release record reaches the gate and promote jobs as an extra variable.
    assert all(templates[n["template"]].get("ask_variables") for n in path if "template" in n
               and templates[n["template"]]["playbook"].endswith("promote.yml"))


def test_every_credential_kind_and_injected_variable_is_used():
    kinds = set(SPECS["awx_configure"]["options"]["awx_credentials"]["options"])
    injected = {}
    for ctype in DEFS["awx_credential_types"]:
        ids = {f["id"] for f in ctype["inputs"]["fields"]}
        assert set(ctype["inputs"].get("required", [])) <= ids, ctype["name"]
        for var, value in ctype["injectors"]["extra_vars"].items():
            field = value.strip("{} ")
            assert field in ids, f"{ctype['name']}: {var} injects {value}, which is not one of its inputs"
            injected[var] = ctype["name"]
    registry_vars = [v for v, name in injected.items() if name == "modelops.serving registry"]
    assert registry_vars
    for template in TEMPLATES:
        assert set(template["credential_kinds"]) <= kinds, template["name"]
        if "registry" in template["credential_kinds"]:
            options = spec_of(template)["options"]
            for var in registry_vars:
                assert var in options, f"{template['name']}: the registry credential sets {var}, {template['playbook']} ignores it"


def test_the_workflow_runs_templates_that_exist():
    names = {t["name"] for t in TEMPLATES}
    for workflow in DEFS["awx_workflows"]:
        nodes = awx_workflow_nodes(workflow["nodes"], CONFIGURE["vars"]["awx_organization"])
        for node in nodes:
            ujt = node["unified_job_template"]
            if ujt["type"] == "job_template":
                assert ujt["name"] in names, f"{workflow['name']}: node {node['identifier']} runs {ujt['name']}"


def test_the_configure_playbooks_defaults_are_its_documented_ones():
    options = SPECS["awx_configure"]["options"]
    for name, value in CONFIGURE["vars"].items():
        if name in options and "default" in options[name]:
            assert value == options[name]["default"], name


@lru_cache(maxsize=None)
def module_options(module: str) -> dict:
    doc = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-j", module], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return json.loads(doc)[module]["doc"]["options"]


def check_against_doc(where: str, value, option: dict, problems: list):
    """The keys of a dict value are suboptions of its option, recursively, and choices hold."""
    if "choices" in option and value not in option["choices"] and str(value) not in map(str, option["choices"]):
        problems.append(f"{where}: {value!r} is not one of {option['choices']}")
    subs = option.get("suboptions")
    if not subs:
        return
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, dict):
            continue
        for key, sub in item.items():
            if key not in subs:
                problems.append(f"{where}.{key} is not documented")
            else:
                check_against_doc(f"{where}.{key}", sub, subs[key], problems)


def test_every_awx_task_argument_is_one_the_module_documents():
    problems = []
    for task in CONFIGURE["tasks"]:
        module = next((k for k in task if k.startswith("awx.awx.")), None)
        if module is None:
            continue
        options = module_options(module)
        for arg in task[module]:
            if arg not in options:
                problems.append(f"{task['name']}: {module} has no option {arg}")
    # The structures the filters make, checked to the leaves.
    jt = module_options("awx.awx.job_template")
    for template in TEMPLATES:
        if template["survey"]:
            spec = awx_survey(template["survey"], template["name"], template["description"])
            for question in spec["spec"]:
                if question["type"] not in ("text", "textarea", "password", "integer", "float", "multiplechoice",
                                            "multiselect"):
                    problems.append(f"{template['name']}: {question['type']}")
        assert jt["survey_spec"]["type"] == "dict"
    wf = module_options("awx.awx.workflow_job_template")["workflow_nodes"]
    for workflow in DEFS["awx_workflows"]:
        check_against_doc(f"{workflow['name']}.workflow_nodes",
                          awx_workflow_nodes(workflow["nodes"], CONFIGURE["vars"]["awx_organization"]), wf, problems)
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- the awx import document
# awx_configure.yml with awx_export_path writes the same objects for awxkit's `awx import`. No AWX
# can import it here; what is checked is what awxkit's import relies on: the resources it knows,
# natural keys made of exactly the fields its page classes name (it matches existing objects by
# them, so a second import updates instead of duplicating), every reference resolving to an
# object of the document or to one the site names (credentials, execution environment), and the
# same templates, surveys, credentials and workflow links as the configure path makes.

SITE = {"awx_project_scm_url": "https://git.example.internal/ml/site.git",
        "awx_inventory_path": "inventories/production", "awx_staging_inventory_path": "inventories/staging",
        "awx_execution_environment": "modelops-ee 0.1.0",
        "awx_credentials": {"machine": "fleet ssh", "vault": "site vault", "registry": "site registry"},
        "awx_project_credential": "git deploy key"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("awx") / "modelops-awx.json"
    extra = dict(SITE, awx_export_path=str(out))
    res = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                          str(PLAYBOOKS / "awx_configure.yml"), "-e", json.dumps(extra)],
                         capture_output=True, text=True, timeout=300, check=False,
                         env=dict(os.environ, CONTROLLER_HOST="https://127.0.0.1:9", ANSIBLE_NOCOLOR="1"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "Create the organization" not in res.stdout, "the export run went on to configure AWX"
    return json.loads(out.read_text())


def awxkit_pages():
    """awxkit's page class of each object type the document holds or refers to."""
    from awxkit.api import pages
    return {"organization": pages.Organization, "credential_type": pages.CredentialType, "project": pages.Project,
            "inventory": pages.Inventory, "inventory_source": pages.InventorySource,
            "job_template": pages.JobTemplate, "workflow_job_template": pages.WorkflowJobTemplate,
            "workflow_job_template_node": pages.WorkflowJobTemplateNode, "credential": pages.Credential,
            "execution_environment": pages.ExecutionEnvironment}


# The object type of each resource list awxkit imports.
RESOURCE_TYPES = {"organizations": "organization", "credential_types": "credential_type", "projects": "project",
                  "inventory": "inventory", "inventory_sources": "inventory_source",
                  "job_templates": "job_template", "workflow_job_templates": "workflow_job_template"}


def natural_keys(value, opaque=()):
    """Every natural key a value holds or refers to (dicts with a type), outermost first; the keys of
    the types in opaque are yielded without what they hold."""
    if isinstance(value, dict):
        is_key = isinstance(value.get("type"), str) and ("name" in value or "identifier" in value)
        if is_key:
            yield value
            if value["type"] in opaque:
                return
        for v in value.values():
            yield from natural_keys(v, opaque)
    elif isinstance(value, list):
        for v in value:
            yield from natural_keys(v, opaque)


def test_the_export_uses_only_resources_awxkit_imports(exported):
    from awxkit.api.pages.api import EXPORTABLE_RESOURCES
    assert set(exported) <= set(EXPORTABLE_RESOURCES), sorted(set(exported) - set(EXPORTABLE_RESOURCES))
    for resource in RESOURCE_TYPES:
        assert exported[resource], f"{resource} is empty"


def test_every_natural_key_has_exactly_awxkits_fields(exported):
    by_type = awxkit_pages()
    problems = []
    for key in natural_keys(exported):
        if key.get("type") not in by_type:
            continue
        expected = set(by_type[key["type"]].NATURAL_KEY) | {"type"}
        if set(key) != expected:
            problems.append(f"{key['type']} {key.get('name', key.get('identifier'))}: {sorted(key)} != {sorted(expected)}")
    for resource, assets in exported.items():
        for asset in assets:
            expected = set(by_type[RESOURCE_TYPES[resource]].NATURAL_KEY) | {"type"}
            if set(asset["natural_key"]) != expected or asset["natural_key"]["type"] != RESOURCE_TYPES[resource]:
                problems.append(f"{resource} {asset['name']}: natural key {sorted(asset['natural_key'])}")
    assert not problems, "\n".join(problems)


def test_every_reference_resolves_in_the_document_or_to_what_the_site_names(exported):
    defined = {json.dumps(a["natural_key"], sort_keys=True) for assets in exported.values() for a in assets}
    for wf in exported["workflow_job_templates"]:
        defined |= {json.dumps(n["natural_key"], sort_keys=True) for n in wf["related"]["workflow_nodes"]}
    external = {"credential": set(SITE["awx_credentials"].values()) | {SITE["awx_project_credential"]},
                "execution_environment": {SITE["awx_execution_environment"]}}
    problems, seen = [], set()
    # A site's credential is referred to with its type's key (AWX's own types or this collection's).
    for key in natural_keys(exported, opaque=tuple(external)):
        if key["type"] in external:
            seen.add(key["name"])
            kind = key.get("credential_type", {}).get("name")
            if key["type"] == "credential" and kind not in {"Machine", "Vault", "Source Control"} | {
                    t["name"] for t in exported["credential_types"]}:
                problems.append(f"credential {key['name']} has a type no AWX has and the document makes: {kind}")
            if key["name"] not in external[key["type"]]:
                problems.append(f"{key['type']} {key['name']} is not one the site names")
            continue
        if json.dumps(key, sort_keys=True) not in defined:
            problems.append(f"{key} refers to nothing in the document")
    assert not problems, "\n".join(problems)
    assert seen == external["credential"] | external["execution_environment"], seen


def test_the_export_makes_what_the_configure_path_makes(exported):
    org = CONFIGURE["vars"]["awx_organization"]
    creds = SITE["awx_credentials"]
    jts = {jt["name"]: jt for jt in exported["job_templates"]}
    assert sorted(jts) == sorted(t["name"] for t in TEMPLATES)
    for template in TEMPLATES:
        jt = jts[template["name"]]
        assert jt["playbook"] == template["playbook"] and (PLAYBOOKS.parent / jt["playbook"]).is_file()
        assert jt["inventory"]["name"] == ("staging" if template.get("environment") == "staging" else "production")
        assert sorted(c["name"] for c in jt["related"]["credentials"]) == sorted(
            creds[k] for k in template["credential_kinds"])
        want = awx_survey(template["survey"], template["name"], template["description"]) if template["survey"] else {}
        assert jt["related"]["survey_spec"] == want
        assert jt["survey_enabled"] is bool(template["survey"])
        assert json.loads(jt["extra_vars"]) == template.get("extra_vars", {})
        assert jt["ask_variables_on_launch"] is template.get("ask_variables", False)
        assert jt["execution_environment"]["name"] == SITE["awx_execution_environment"]
    for workflow in DEFS["awx_workflows"]:
        wf = next(w for w in exported["workflow_job_templates"] if w["name"] == workflow["name"])
        nodes = {n["identifier"]: n for n in wf["related"]["workflow_nodes"]}
        for node in awx_workflow_nodes(workflow["nodes"], org):
            got = nodes[node["identifier"]]
            ujt = node["unified_job_template"]
            if ujt["type"] == "job_template":
                assert got["unified_job_template"]["name"] == ujt["name"]
            else:
                assert got["unified_job_template"] is None
                assert got["related"]["create_approval_template"]["timeout"] == ujt["timeout"]
            for rel, targets in node["related"].items():
                assert [t["identifier"] for t in got["related"][rel]] == [t["identifier"] for t in targets]
    types = {t["name"]: t for t in exported["credential_types"]}
    for ct in RAW["awx_credential_types"]:
        # AWX templates the injectors itself: they reach the document as written, not rendered.
        assert types[ct["name"]]["injectors"] == ct["injectors"]
