# Copyright: modelops.serving maintainers
# Apache License 2.0 (see LICENSE)
"""Blue/green deploy computations: slot ports, upstreams, replica names, GPU requests, record transitions.

Each filter is documented in the YAML file of its name next to this one (ansible-doc -t filter).
"""
from __future__ import annotations

from ansible.errors import AnsibleFilterError

SLOTS = ("a", "b")
# Slot "b" listens this far above slot "a". This is the one place the offset is set:
# model_deploy calls these filters without an offset, so the default applies.
SLOT_OFFSET = 50


def _int(value, what):
    try:
        return int(value)
    except (TypeError, ValueError):
        raise AnsibleFilterError("%s must be an integer, got %r" % (what, value)) from None


def _slot(slot):
    if slot not in SLOTS:
        raise AnsibleFilterError("a slot is 'a' or 'b', got %r" % (slot,))
    return slot


def slot_port(port, slot, offset=SLOT_OFFSET):
    """First 127.0.0.1 port of a model's slot: port for "a", port + offset for "b"."""
    return _int(port, "port") + (0 if _slot(slot) == "a" else _int(offset, "offset"))


def slot_upstreams(port, slot, replicas, host="127.0.0.1", offset=SLOT_OFFSET, labels=None):
    """The nginx upstream servers of one slot: [{'address': 'host:port'}, ...], one per replica.

    With labels (a dict such as {model, version, host}), each server also gets
    'labels': those, as strings, plus its slot and replica index, which the nginx
    role turns into the replica's metrics route and Prometheus SD entry.
    """
    base = slot_port(port, slot, offset)
    if labels is not None and not isinstance(labels, dict):
        raise AnsibleFilterError("slot_upstreams labels must be a dict, got %r" % (labels,))
    servers = []
    for index in range(_int(replicas, "replicas")):
        server = {"address": "%s:%d" % (host, base + index)}
        if labels is not None:
            server["labels"] = dict({key: str(value) for key, value in labels.items()},
                                    slot=slot, replica=str(index))
        servers.append(server)
    return servers


def replica_names(model, slot, replicas):
    """Container names of one slot's replicas: model-<model>-<slot>-<index>."""
    if not model:
        raise AnsibleFilterError("replica_names needs a model name")
    return ["model-%s-%s-%d" % (model, _slot(slot), index) for index in range(_int(replicas, "replicas"))]


def device_requests(model):
    """Docker device requests for a model's GPUs: gpu_ids, else gpus ('all' or a count), else none."""
    model = model or {}
    ids = model.get("gpu_ids") or []
    if ids:
        return [{"driver": "nvidia", "device_ids": [str(i) for i in ids], "capabilities": [["gpu"]]}]
    gpus = model.get("gpus", 0)
    if gpus is None or gpus == "":
        return []
    if str(gpus).strip().lower() == "all":
        return [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}]
    count = _int(gpus, "gpus of %s" % model.get("name", "the model"))
    if count < 0:
        raise AnsibleFilterError("gpus of %s must be 0, a positive count or 'all', got %r"
                                 % (model.get("name", "the model"), gpus))
    return [{"driver": "nvidia", "count": count, "capabilities": [["gpu"]]}] if count else []


def target_slot(entry, image):
    """The slot that gets image: the live slot when it already runs it, else the other one ('a' first)."""
    entry = entry or {}
    live = entry.get("live_slot") or ""
    if live and entry.get("live_image") == image:
        return _slot(live)
    return "b" if live == "a" else "a"


def _models(record):
    record = dict(record or {})
    record["models"] = dict(record.get("models") or {})
    return record


def record_deploy(record, name, slot, version, image, replicas, port):
    """The record after name's slot went live with image: the old live becomes the previous."""
    record = _models(record)
    old = dict(record["models"].get(name) or {})
    if old.get("live_slot") == slot and old.get("live_image") == image:
        return record
    new = dict(old)
    new.update({
        "live_slot": _slot(slot), "live_version": str(version), "live_image": image,
        "previous_slot": old.get("live_slot", ""), "previous_version": old.get("live_version", ""),
        "previous_image": old.get("live_image", ""),
        "replicas": _int(replicas, "replicas"), "port": _int(port, "port"),
    })
    record["models"][name] = new
    return record


def record_rollback(record, name):
    """The record after name went back to its previous slot: live and previous swap."""
    record = _models(record)
    old = record["models"].get(name)
    if not old or not old.get("previous_slot"):
        raise AnsibleFilterError("%s has no previous version in the deployment record; there is nothing to roll back to"
                                 % name)
    new = dict(old)
    for key in ("slot", "version", "image"):
        new["live_" + key], new["previous_" + key] = old.get("previous_" + key, ""), old.get("live_" + key, "")
    record["models"][name] = new
    return record


def record_switched(record, before):
    """Names of the models whose live image changed since before and that have a previous slot to go back to."""
    before = (before or {}).get("models") or {}
    out = []
    for name, entry in sorted(((record or {}).get("models") or {}).items()):
        if entry.get("live_image") != (before.get(name) or {}).get("live_image", "") and entry.get("previous_slot"):
            out.append(name)
    return out


def first_failure(result, default="unknown error"):
    """The message of a failed task result: its first failed loop item's, else its own, else default."""
    result = result or {}
    for item in result.get("results") or []:
        if isinstance(item, dict) and item.get("failed") and item.get("msg"):
            return str(item["msg"])
    return str(result.get("msg") or default)


def deployment_problems(models, offset=SLOT_OFFSET):
    """What is wrong with one host's model_deploy_models: repeated names, GPU settings, overlapping ports."""
    problems = []
    seen = set()
    taken = {}
    for model in models or []:
        name = (model or {}).get("name")
        if not name:
            problems.append("model_deploy_models: an item has no name")
            continue
        if name in seen:
            problems.append("model_deploy_models: %s is listed twice" % name)
            continue
        seen.add(name)
        try:
            device_requests(model)
        except AnsibleFilterError as exc:
            problems.append("model_deploy_models: %s" % exc)
        port = _int(model.get("port", 8600), "port of %s" % name)
        replicas = _int(model.get("replicas", 1), "replicas of %s" % name)
        if not 1 <= replicas <= _int(offset, "offset"):
            problems.append("model_deploy_models: %s has %d replicas; 1 to %d fit a slot" % (name, replicas, offset))
            continue
        for slot in SLOTS:
            for number in range(slot_port(port, slot, offset), slot_port(port, slot, offset) + replicas):
                if number in taken:
                    problems.append("model_deploy_models: %s slot %s port %d is also %s's"
                                    % (name, slot, number, taken[number]))
                    break
                taken[number] = "%s slot %s" % (name, slot)
    return problems


class FilterModule:
    """Blue/green deploy filters of modelops.serving."""

    def filters(self):
        return {
            "slot_port": slot_port,
            "slot_upstreams": slot_upstreams,
            "replica_names": replica_names,
            "device_requests": device_requests,
            "target_slot": target_slot,
            "record_deploy": record_deploy,
            "record_rollback": record_rollback,
            "record_switched": record_switched,
            "first_failure": first_failure,
            "deployment_problems": deployment_problems,
        }
