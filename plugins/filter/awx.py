# Copyright: modelops.serving maintainers
# Apache License 2.0 (see LICENSE)
"""AWX/Tower objects made from the short definitions in playbooks/vars/awx.yml.

awx_survey turns a job template's list of questions into the survey_spec that
awx.awx.job_template takes; awx_workflow_nodes turns a workflow's nodes (a
template or an approval each, with the nodes that follow on success, failure
or always) into the workflow_nodes of awx.awx.workflow_job_template;
awx_assets makes, from the same definitions, the document `awx import`
(awxkit) reads: the objects awx_configure.yml makes, each with the natural key
AWX matches it by. Each filter is documented in the YAML file of its name next
to this one.
"""
from __future__ import annotations

import json

from ansible.errors import AnsibleFilterError

SURVEY_TYPES = ("text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect")
QUESTION_KEYS = {"variable", "question_name", "question_description", "type", "required", "default", "choices",
                 "min", "max"}
LINKS = {"success": "success_nodes", "failure": "failure_nodes", "always": "always_nodes"}
NODE_KEYS = {"identifier", "template", "approval", "timeout", "all_parents_must_converge"} | set(LINKS)


def awx_survey(questions, name, description=""):
    """The survey_spec of a job template from its questions; each names the variable it sets."""
    if not isinstance(questions, (list, tuple)):
        raise AnsibleFilterError("awx_survey: the questions must be a list, got %s" % type(questions).__name__)
    spec, seen = [], set()
    for q in questions:
        if not isinstance(q, dict) or not q.get("variable") or not q.get("question_name"):
            raise AnsibleFilterError("awx_survey (%s): every question needs a variable and a question_name, got %r"
                                     % (name, q))
        unknown = sorted(set(q) - QUESTION_KEYS)
        if unknown:
            raise AnsibleFilterError("awx_survey (%s): question %s has unknown keys: %s"
                                     % (name, q["variable"], ", ".join(unknown)))
        if q["variable"] in seen:
            raise AnsibleFilterError("awx_survey (%s): variable %s is asked twice" % (name, q["variable"]))
        seen.add(q["variable"])
        kind = q.get("type", "text")
        if kind not in SURVEY_TYPES:
            raise AnsibleFilterError("awx_survey (%s): question %s has type %s; AWX knows %s"
                                     % (name, q["variable"], kind, ", ".join(SURVEY_TYPES)))
        choices = q.get("choices")
        if kind in ("multiplechoice", "multiselect"):
            if not choices:
                raise AnsibleFilterError("awx_survey (%s): question %s (%s) needs choices" % (name, q["variable"], kind))
            if "default" in q and str(q["default"]) not in [str(c) for c in choices]:
                raise AnsibleFilterError("awx_survey (%s): the default of %s, %r, is not one of its choices"
                                         % (name, q["variable"], q["default"]))
        item = {"question_description": "", "required": False}
        item.update(q)
        item["type"] = kind
        if choices is not None:
            item["choices"] = [str(c) for c in choices]
        if "default" in item:
            item["default"] = "" if item["default"] is None else item["default"]
        spec.append(item)
    return {"name": name, "description": description, "spec": spec}


def awx_workflow_nodes(nodes, organization):
    """awx.awx.workflow_job_template's workflow_nodes from short nodes (template or approval)."""
    if not isinstance(nodes, (list, tuple)) or not nodes:
        raise AnsibleFilterError("awx_workflow_nodes: the nodes must be a non-empty list")
    ids = [n.get("identifier") if isinstance(n, dict) else None for n in nodes]
    if None in ids or len(set(ids)) != len(ids):
        raise AnsibleFilterError("awx_workflow_nodes: every node needs its own identifier, got %r" % ids)
    out = []
    for node in nodes:
        ident = node["identifier"]
        unknown = sorted(set(node) - NODE_KEYS)
        if unknown:
            raise AnsibleFilterError("awx_workflow_nodes: node %s has unknown keys: %s" % (ident, ", ".join(unknown)))
        if ("template" in node) == ("approval" in node):
            raise AnsibleFilterError("awx_workflow_nodes: node %s needs either a template or an approval" % ident)
        if "template" in node:
            ujt = {"name": node["template"], "type": "job_template", "organization": {"name": organization}}
        else:
            ujt = {"name": "%s: %s" % (ident, node["approval"])[:512], "description": node["approval"],
                   "type": "workflow_approval", "timeout": int(node.get("timeout", 0))}
        related = {}
        for key, rel in LINKS.items():
            targets = node.get(key, [])
            missing = [t for t in targets if t not in ids]
            if missing:
                raise AnsibleFilterError("awx_workflow_nodes: node %s links to unknown nodes: %s"
                                         % (ident, ", ".join(missing)))
            related[rel] = [{"identifier": t} for t in targets]
        item = {"identifier": ident, "unified_job_template": ujt, "related": related}
        if "all_parents_must_converge" in node:
            item["all_parents_must_converge"] = bool(node["all_parents_must_converge"])
        out.append(item)
    return out


# AWX's own credential types, by the kinds awx_configure.yml's awx_credentials names
# (the registry's type is this collection's, made from awx_credential_types).
MANAGED_CREDENTIAL_TYPES = {"machine": ("Machine", "ssh"), "vault": ("Vault", "vault"), "scm": ("Source Control", "scm")}


def _key(obj_type, /, **fields):
    """A natural key as awxkit writes it: the identifying fields and the object's type."""
    return dict(fields, type=obj_type)


def awx_assets(job_templates, workflows, credential_types, organization, project, inventories, credentials=None,
               execution_environment=""):
    """The `awx import` document of the objects awx_configure.yml makes from the same definitions."""
    credentials = dict(credentials or {})
    org = _key("organization", name=organization)
    ee = _key("execution_environment", name=execution_environment) if execution_environment else None

    def credential(kind, name):
        """The key of the site's credential of this kind (AWX's own type, or this collection's), or None."""
        if not name:
            return None
        if kind in MANAGED_CREDENTIAL_TYPES:
            type_name, type_kind = MANAGED_CREDENTIAL_TYPES[kind]
        else:
            matching = [t for t in credential_types if t["name"].endswith(" " + kind)]
            if len(matching) != 1:
                raise AnsibleFilterError("awx_assets: no credential type of this collection is for the %s credential"
                                         % kind)
            type_name, type_kind = matching[0]["name"], matching[0]["kind"]
        return _key("credential", organization=org, name=name,
                    credential_type=_key("credential_type", name=type_name, kind=type_kind))

    proj = _key("project", organization=org, name=project["name"])
    out = {
        "organizations": [{"name": organization, "description": "Model serving with modelops.serving",
                           "related": {}, "natural_key": org}],
        "credential_types": [{"name": t["name"], "description": t.get("description", ""), "kind": t["kind"],
                              "inputs": t["inputs"], "injectors": t["injectors"], "related": {},
                              "natural_key": _key("credential_type", name=t["name"], kind=t["kind"])}
                             for t in credential_types],
        "projects": [{"name": project["name"], "description": project.get("description", ""), "scm_type": "git",
                      "scm_url": project["scm_url"], "scm_branch": project.get("scm_branch", ""),
                      "scm_update_on_launch": True,
                      "credential": credential("scm", project.get("credential")),
                      "default_environment": ee, "organization": org, "related": {}, "natural_key": proj}],
        "inventory": [], "inventory_sources": [], "job_templates": [], "workflow_job_templates": [],
    }
    inv_keys = {}
    for env, inv in inventories.items():
        inv_keys[env] = _key("inventory", organization=org, name=inv["name"])
        out["inventory"].append({
            "name": inv["name"], "description": "%s: %s of the %s project" % (env, inv["path"], project["name"]),
            "organization": org, "variables": "", "related": {}, "natural_key": inv_keys[env]})
        source = "%s from %s" % (inv["name"], project["name"])
        out["inventory_sources"].append({
            "name": source, "source": "scm", "source_project": proj,
            "source_path": inv["path"], "overwrite": True, "overwrite_vars": True, "update_on_launch": True,
            "inventory": inv_keys[env], "related": {},
            "natural_key": _key("inventory_source", organization=org, name=source, inventory=inv_keys[env])})

    def inventory_of(item):
        env = item.get("environment", "production")
        if env not in inv_keys:
            raise AnsibleFilterError("awx_assets: %s runs on the %s inventory, which is not given"
                                     % (item["name"], env))
        return inv_keys[env]

    jt_keys = {}
    for jt in job_templates:
        survey = jt.get("survey") or []
        jt_keys[jt["name"]] = _key("job_template", organization=org, name=jt["name"])
        creds = [c for c in (credential(kind, credentials.get(kind)) for kind in jt.get("credential_kinds", [])) if c]
        out["job_templates"].append({
            "name": jt["name"], "description": jt.get("description", ""), "job_type": "run",
            "playbook": jt["playbook"], "inventory": inventory_of(jt), "project": proj,
            "execution_environment": ee, "become_enabled": False,
            "extra_vars": json.dumps(jt.get("extra_vars") or {}, sort_keys=True),
            "ask_variables_on_launch": bool(jt.get("ask_variables", False)), "survey_enabled": bool(survey),
            "related": {"credentials": creds,
                        "survey_spec": awx_survey(survey, jt["name"], jt.get("description", "")) if survey else {}},
            "natural_key": jt_keys[jt["name"]]})

    for wf in workflows:
        wf_key = _key("workflow_job_template", organization=org, name=wf["name"])
        nodes = []
        for node in awx_workflow_nodes(wf["nodes"], organization):
            ujt = node["unified_job_template"]
            related = {rel: [_key("workflow_job_template_node", workflow_job_template=wf_key,
                                  identifier=t["identifier"]) for t in targets]
                       for rel, targets in node["related"].items()}
            if ujt["type"] == "job_template":
                if ujt["name"] not in jt_keys:
                    raise AnsibleFilterError("awx_assets: workflow %s runs %s, which is not one of the job templates"
                                             % (wf["name"], ujt["name"]))
                template = jt_keys[ujt["name"]]
            else:
                template = None
                related["create_approval_template"] = {k: ujt[k] for k in ("name", "description", "timeout")}
            nodes.append({"identifier": node["identifier"], "unified_job_template": template,
                          "all_parents_must_converge": node.get("all_parents_must_converge", False),
                          "extra_data": {}, "related": related,
                          "natural_key": _key("workflow_job_template_node", workflow_job_template=wf_key,
                                              identifier=node["identifier"])})
        out["workflow_job_templates"].append({
            "name": wf["name"], "description": wf.get("description", ""), "organization": org,
            "inventory": inventory_of({"name": wf["name"]}), "survey_enabled": False,
            "related": {"workflow_nodes": nodes, "survey_spec": {}}, "natural_key": wf_key})
    return out


class FilterModule:
    """AWX/Tower filters of modelops.serving."""

    def filters(self):
        return {"awx_survey": awx_survey, "awx_workflow_nodes": awx_workflow_nodes, "awx_assets": awx_assets}
