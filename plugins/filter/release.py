# Copyright: modelops.serving maintainers
# Apache License 2.0 (see LICENSE)
"""Release records: what one environment runs, handed to the next (staging -> production).

bad_digests names the entries of a {model: digest} mapping that are not image
digests (the one place the digest pattern is written, for the playbooks' and
the model_deploy role's checks).
release_live reads what one model server runs from its live replicas (not from
the inventory); release_record makes the record at the end of a rolling update
from what every model server runs, and
refuses a fleet whose hosts run different images of one model. release_pins
checks a record against the catalog of the environment it is promoted to and
returns the digests that environment's rollout must run; soak_fired and
soak_unseen read staging's Prometheus answers for the soak gate. Each filter is
documented in the YAML file of its name next to this one.
"""
from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
RECORD_KEYS = ("environment", "recorded_at", "models", "gateways")


def bad_digests(digests):
    """The keys of {name: digest} whose value is not an image ID or registry digest, sorted."""
    if not isinstance(digests, dict):
        raise AnsibleFilterError("bad_digests: expected a mapping of model names to digests, got %s"
                                 % type(digests).__name__)
    return sorted(name for name, value in digests.items() if not DIGEST.match(str(value)))


def release_record(per_host, environment, recorded_at, gateways=None, prometheus_url=""):
    """The release of an environment from {host: {model: {version, image, digest}}} of its model servers."""
    if not isinstance(per_host, dict) or not per_host:
        raise AnsibleFilterError("release_record: no model server reported what it runs")
    models = {}
    for host in sorted(per_host):
        for name, live in sorted((per_host[host] or {}).items()):
            if not isinstance(live, dict) or not DIGEST.match(str(live.get("digest", ""))):
                raise AnsibleFilterError("release_record: %s reports no image digest for %s (%r)" % (host, name, live))
            entry = {"version": str(live.get("version", "")), "image": str(live.get("image", "")),
                     "digest": live["digest"]}
            seen = models.setdefault(name, dict(entry, hosts=[]))
            if (seen["version"], seen["digest"]) != (entry["version"], entry["digest"]):
                raise AnsibleFilterError(
                    "release_record: the model servers run different images of %s: %s runs %s %s, %s runs %s %s; "
                    "no release is recorded for a mixed fleet"
                    % (name, seen["hosts"][0], seen["version"], seen["digest"], host, entry["version"], entry["digest"]))
            seen["hosts"].append(host)
    if not models:
        raise AnsibleFilterError("release_record: the model servers run no model")
    return {"environment": str(environment), "recorded_at": float(recorded_at), "models": models,
            "gateways": list(gateways or []), "prometheus_url": str(prometheus_url or "")}


def release_live(results, record):
    """{model: {version, image, digest}} of one host, from docker_container_info results of its live replicas."""
    models = ((record or {}).get("models")) or {}
    out = {}
    for result in results or []:
        name = result.get("item") if isinstance(result, dict) else None
        if not name or name not in models:
            continue
        container = result.get("container") or {}
        out[name] = {"version": str(models[name].get("live_version", "")), "image": models[name].get("live_image", ""),
                     "digest": container.get("Image", "") if result.get("exists", bool(container)) else ""}
    return out


def release_pins(release, catalog, names=None):
    """{model: digest} for the models to promote; fails naming what disagrees with the catalog."""
    if not isinstance(release, dict) or any(key not in release for key in RECORD_KEYS):
        raise AnsibleFilterError("release_pins: the release record must have %s (it is written by "
                                 "rolling_update.yml: rollout_release_file, or the promote_release AWX artifact)"
                                 % ", ".join(RECORD_KEYS))
    released = release["models"] or {}
    wanted = list(names) if names else sorted(released)
    versions = {}
    for model in catalog or []:
        if isinstance(model, dict) and model.get("name"):
            versions[model["name"]] = str(model.get("version", ""))
    pins, problems = {}, []
    for name in wanted:
        entry = released.get(name)
        if not entry:
            problems.append("%s is not in the release of %s (it has %s)"
                            % (name, release["environment"], ", ".join(sorted(released)) or "no model"))
            continue
        if not DIGEST.match(str(entry.get("digest", ""))):
            problems.append("%s has no image digest in the release (%r)" % (name, entry.get("digest")))
            continue
        if name not in versions:
            problems.append("%s is not in this inventory's model catalog (modelops_models)" % name)
        elif versions[name] != str(entry.get("version")):
            problems.append("%s: this inventory's catalog names version %s, but %s tested version %s"
                            % (name, versions[name], release["environment"], entry.get("version")))
        else:
            pins[name] = entry["digest"]
    if problems:
        raise AnsibleFilterError("release_pins: " + "; ".join(problems))
    return pins


def _vector(answer, what):
    """The result list of a Prometheus instant-query answer (its JSON), refusing anything else."""
    data = (answer or {}).get("data") if isinstance(answer, dict) else None
    if not isinstance(answer, dict) or answer.get("status") != "success" or not isinstance(data, dict) \
            or data.get("resultType") != "vector":
        raise AnsibleFilterError("%s: Prometheus did not answer with a vector: %r" % (what, answer))
    return data.get("result") or []


def soak_fired(answer):
    """Each alert of a Prometheus answer, as 'Alertname (model 1 on host)' lines."""
    out = []
    for series in _vector(answer, "soak_fired"):
        labels = series.get("metric") or {}
        where = " ".join(x for x in (labels.get("model", ""), labels.get("version", "")) if x)
        if labels.get("host"):
            where = (where + " on " if where else "on ") + labels["host"]
        out.append("%s (%s)" % (labels.get("alertname", "an alert"), where) if where
                   else labels.get("alertname", "an alert"))
    return sorted(set(out))


def soak_unseen(answer, release, pins):
    """'model version' of each pinned model that the answer's (model, version) series do not show."""
    seen = {(s.get("metric", {}).get("model"), s.get("metric", {}).get("version"))
            for s in _vector(answer, "soak_unseen")}
    models = (release or {}).get("models") or {}
    return ["%s %s" % (name, models.get(name, {}).get("version", "?")) for name in sorted(pins or {})
            if (name, str(models.get(name, {}).get("version", ""))) not in seen]


class FilterModule:
    """Release filters of modelops.serving."""

    def filters(self):
        return {"bad_digests": bad_digests, "release_record": release_record, "release_live": release_live, "release_pins": release_pins,
                "soak_fired": soak_fired, "soak_unseen": soak_unseen}
