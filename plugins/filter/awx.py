# Copyright: modelops.serving maintainers
# Apache License 2.0 (see LICENSE)
"""AWX/Tower objects made from the short definitions in playbooks/vars/awx.yml.

awx_survey turns a job template's list of questions into the survey_spec that
awx.awx.job_template takes; awx_workflow_nodes turns a workflow's nodes (a
template or an approval each, with the nodes that follow on success, failure
or always) into the workflow_nodes of awx.awx.workflow_job_template. Each
filter is documented in the YAML file of its name next to this one.
"""
from __future__ import annotations

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


class FilterModule:
    """AWX/Tower filters of modelops.serving."""

    def filters(self):
        return {"awx_survey": awx_survey, "awx_workflow_nodes": awx_workflow_nodes}
