# Copyright: modelops.serving maintainers
# Apache License 2.0 (see LICENSE)
"""The site's model catalog (modelops_models) and the lists made from it.

A site lists each model once; packaging (modelops_packages), the gateway and
load-balancer routes (nginx_models) and the deploy (model_deploy_models) are
read from it through these filters, and catalog_check says where lists that
were set by hand disagree. Each filter is documented in the YAML file of its
name next to this one (ansible-doc -t filter).
"""
from __future__ import annotations

from ansible.errors import AnsibleFilterError

# Catalog key -> modelops.serving.model_package option (package_models.yml item key).
PACKAGE_KEYS = {
    "model_path": "model_path", "reference_data": "reference_data", "framework": "framework",
    "sample": "sample", "expected": "expected", "trusted_globals": "trusted_globals",
    "trust_pickle": "trust_pickle", "trust_model_code": "trust_model_code", "base_image": "base_image",
    "image": "repository", "registry": "registry", "push": "push", "archive": "archive_path",
}
# Catalog keys a model_deploy_models item takes as they are.
DEPLOY_KEYS = ("archive", "replicas", "port", "memory", "cpus", "gpus", "gpu_ids", "env", "sample", "expected",
               "tolerance", "slo_p99_ms", "latency_requests")
# Keys of a catalog item's route (the nginx role's nginx_models item options, but name and upstreams).
ROUTE_KEYS = ("keepalive", "max_body", "timeouts", "api_keys")
CATALOG_KEYS = {"name", "version", "route"} | set(PACKAGE_KEYS) | set(DEPLOY_KEYS)


def _items(catalog, what="modelops_models"):
    if catalog is None:
        return []
    if not isinstance(catalog, (list, tuple)):
        raise AnsibleFilterError("%s must be a list of models, got %s" % (what, type(catalog).__name__))
    for item in catalog:
        if not isinstance(item, dict) or not item.get("name"):
            raise AnsibleFilterError("%s: every item needs a name, got %r" % (what, item))
    return list(catalog)


def _version(item):
    if item.get("version") in (None, ""):
        raise AnsibleFilterError("modelops_models: %s has no version" % item["name"])
    return str(item["version"])


def _image(item):
    """The image repository the catalog item is deployed from (with its registry when it has one)."""
    repository = item.get("image") or "modelops/%s" % item["name"]
    return "%s/%s" % (item["registry"].rstrip("/"), repository) if item.get("registry") else repository


def catalog_packages(catalog):
    """The modelops_packages items (package_models.yml) of the catalog's models that have a model_path."""
    out = []
    for item in _items(catalog):
        if not item.get("model_path"):
            continue
        package = {"name": item["name"], "version": _version(item)}
        package.update({dest: item[key] for key, dest in PACKAGE_KEYS.items() if key in item})
        out.append(package)
    return out


def catalog_deployments(catalog):
    """The model_deploy_models items of every catalog model (each model server runs them all)."""
    out = []
    for item in _items(catalog):
        deployment = {"name": item["name"], "version": _version(item)}
        if item.get("image") or item.get("registry"):
            deployment["image"] = _image(item)
        deployment.update({key: item[key] for key in DEPLOY_KEYS if key in item})
        out.append(deployment)
    return out


def catalog_routes(catalog, upstreams=None):
    """The nginx_models items of every catalog model; upstreams (a list) is given to each (the load balancers')."""
    out = []
    for item in _items(catalog):
        route = item.get("route") or {}
        if not isinstance(route, dict):
            raise AnsibleFilterError("modelops_models: the route of %s must be a dict, got %r" % (item["name"], route))
        unknown = sorted(set(route) - set(ROUTE_KEYS))
        if unknown:
            raise AnsibleFilterError("modelops_models: the route of %s has unknown keys %s (known: %s)"
                                     % (item["name"], ", ".join(unknown), ", ".join(ROUTE_KEYS)))
        entry = {"name": item["name"]}
        entry.update({key: route[key] for key in ROUTE_KEYS if key in route})
        if upstreams is not None:
            entry["upstreams"] = list(upstreams)
        out.append(entry)
    return out


def _names(items, what, problems):
    names = []
    for item in _items(items, what):
        if item["name"] in names:
            problems.append("%s: %s is listed twice" % (what, item["name"]))
        else:
            names.append(item["name"])
    return names


def catalog_check(catalog, packages=None, routes=None, deployments=None, routes_name="nginx_models",
                  deployments_name="model_deploy_models", packages_name="modelops_packages"):
    """Problems of the catalog and of the lists given ([] when all agree), each naming the model and the list."""
    problems = []
    catalog_names = _names(catalog, "modelops_models", problems)
    for item in _items(catalog):
        unknown = sorted(set(item) - CATALOG_KEYS)
        if unknown:
            problems.append("modelops_models: %s has unknown keys %s" % (item["name"], ", ".join(unknown)))
        if item.get("version") in (None, ""):
            problems.append("modelops_models: %s has no version" % item["name"])
        if not (item.get("model_path") or item.get("image") or item.get("archive")):
            problems.append("modelops_models: %s has neither a model_path to package nor a prebuilt image or archive"
                            % item["name"])
    given = {}
    for what, items in ((packages_name, packages), (routes_name, routes), (deployments_name, deployments)):
        if items is not None:
            given[what] = _names(items, what, problems)
            for name in given[what] if catalog is not None else []:
                if name not in catalog_names:
                    problems.append("%s: %s is not in the catalog (modelops_models)" % (what, name))
    if routes is not None and deployments is not None:
        for name in given[routes_name]:
            if name not in given[deployments_name]:
                problems.append("%s: %s has a gateway route but no replicas (%s)" % (routes_name, name, deployments_name))
        for name in given[deployments_name]:
            if name not in given[routes_name]:
                problems.append("%s: %s has replicas but no gateway route (%s)" % (deployments_name, name, routes_name))
    if deployments is not None:
        built = {(p["name"], str(p.get("version", ""))) for p in _items(packages, packages_name)}
        for item in _items(deployments, deployments_name):
            prebuilt = item.get("image") or item.get("archive")
            if packages is not None and not prebuilt and (item["name"], str(item.get("version", ""))) not in built:
                problems.append("%s: %s %s has neither a package (%s) nor a prebuilt image or archive"
                                % (deployments_name, item["name"], item.get("version", "?"), packages_name))
    return problems


class FilterModule:
    """Model catalog filters of modelops.serving."""

    def filters(self):
        return {
            "catalog_packages": catalog_packages,
            "catalog_deployments": catalog_deployments,
            "catalog_routes": catalog_routes,
            "catalog_check": catalog_check,
        }
