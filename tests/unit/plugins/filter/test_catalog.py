"""The model catalog filters (plugins/filter/catalog.py): one list, its derived lists, the mismatch errors."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.modelops.serving.plugins.filter.catalog import FilterModule

F = FilterModule().filters()

IRIS = {
    "name": "iris", "version": 1, "model_path": "/m/iris-v1/iris.joblib", "reference_data": "/m/iris-v1/ref.csv",
    "image": "lab/iris", "archive": "/m/iris-1.tar", "sample": {"instances": [[6.9, 3.2, 5.7, 2.3]]},
    "expected": [2], "slo_p99_ms": 200, "replicas": 2, "port": 8600, "memory": "512m", "cpus": 1.0,
    "route": {"api_keys": ["team-a"], "max_body": "2m"},
}
WINE = {"name": "wine", "version": "7", "image": "registry.local/wine", "replicas": 1, "port": 8700, "gpus": 1}


def test_packages_only_for_models_with_a_model_path():
    assert F["catalog_packages"]([IRIS, WINE]) == [{
        "name": "iris", "version": "1", "model_path": "/m/iris-v1/iris.joblib", "reference_data": "/m/iris-v1/ref.csv",
        "sample": {"instances": [[6.9, 3.2, 5.7, 2.3]]}, "expected": [2], "repository": "lab/iris",
        "archive_path": "/m/iris-1.tar"}]
    assert F["catalog_packages"]([]) == [] and F["catalog_packages"](None) == []


def test_deployments_of_every_model():
    assert F["catalog_deployments"]([IRIS, WINE]) == [
        {"name": "iris", "version": "1", "image": "lab/iris", "archive": "/m/iris-1.tar", "replicas": 2, "port": 8600,
         "memory": "512m", "cpus": 1.0, "sample": {"instances": [[6.9, 3.2, 5.7, 2.3]]}, "expected": [2],
         "slo_p99_ms": 200},
        {"name": "wine", "version": "7", "image": "registry.local/wine", "replicas": 1, "port": 8700, "gpus": 1}]
    # A registry prefixes the image, as model_package pushes it.
    pushed = dict(WINE, image="team/wine", registry="registry.local:5000/")
    assert F["catalog_deployments"]([pushed])[0]["image"] == "registry.local:5000/team/wine"
    assert F["catalog_deployments"]([{"name": "x", "version": "1", "registry": "r:5000"}])[0]["image"] == "r:5000/modelops/x"


def test_routes_with_and_without_upstreams():
    assert F["catalog_routes"]([IRIS, WINE]) == [
        {"name": "iris", "max_body": "2m", "api_keys": ["team-a"]}, {"name": "wine"}]
    assert F["catalog_routes"]([WINE], upstreams=["10.0.0.1:443", "10.0.0.2:443"]) == [
        {"name": "wine", "upstreams": ["10.0.0.1:443", "10.0.0.2:443"]}]


def test_routes_refuse_unknown_route_keys():
    with pytest.raises(AnsibleFilterError, match="the route of iris has unknown keys upstream"):
        F["catalog_routes"]([dict(IRIS, route={"upstream": ["x"]})])
    with pytest.raises(AnsibleFilterError, match="must be a dict"):
        F["catalog_routes"]([dict(IRIS, route=["x"])])


@pytest.mark.parametrize("catalog", [{"name": "iris"}, "iris", [{"version": "1"}], ["iris"]])
def test_a_malformed_catalog_is_refused(catalog):
    with pytest.raises(AnsibleFilterError, match="modelops_models"):
        F["catalog_deployments"](catalog)


def test_a_model_without_a_version_is_refused():
    with pytest.raises(AnsibleFilterError, match="iris has no version"):
        F["catalog_deployments"]([dict(IRIS, version="")])


def _lists(catalog):
    return {"packages": F["catalog_packages"](catalog), "routes": F["catalog_routes"](catalog),
            "deployments": F["catalog_deployments"](catalog)}


def test_the_lists_made_from_the_catalog_agree():
    assert F["catalog_check"]([IRIS, WINE], **_lists([IRIS, WINE])) == []
    assert F["catalog_check"]([]) == []
    assert F["catalog_check"]([IRIS]) == []


def test_a_route_without_replicas_is_named():
    lists = _lists([IRIS, WINE])
    lists["deployments"] = [d for d in lists["deployments"] if d["name"] != "wine"]
    assert F["catalog_check"]([IRIS, WINE], **lists) == [
        "nginx_models: wine has a gateway route but no replicas (model_deploy_models)"]


def test_replicas_without_a_route_are_named():
    lists = _lists([IRIS, WINE])
    lists["routes"] = lists["routes"][1:]
    assert F["catalog_check"]([IRIS, WINE], **lists) == [
        "model_deploy_models: iris has replicas but no gateway route (nginx_models)"]


def test_a_deployment_without_a_package_or_image_is_named():
    plain = {"name": "iris", "version": "2", "model_path": "/m/iris.joblib"}
    lists = _lists([plain])
    assert F["catalog_check"]([plain], **lists) == []
    lists["packages"] = []
    assert F["catalog_check"]([plain], **lists) == [
        "model_deploy_models: iris 2 has neither a package (modelops_packages) nor a prebuilt image or archive"]
    # Packaged, but another version than the one deployed.
    lists["packages"] = [{"name": "iris", "version": "1", "model_path": "/m/iris.joblib"}]
    assert F["catalog_check"]([plain], **lists) == [
        "model_deploy_models: iris 2 has neither a package (modelops_packages) nor a prebuilt image or archive"]


def test_lists_naming_models_outside_the_catalog_and_list_names_in_messages():
    problems = F["catalog_check"]([IRIS], routes=[{"name": "iris"}, {"name": "ghost"}],
                                  deployments=[{"name": "iris", "version": "1", "image": "x"}],
                                  routes_name="nginx_models (lb1)", deployments_name="model_deploy_models (model1)")
    assert problems == ["nginx_models (lb1): ghost is not in the catalog (modelops_models)",
                        "nginx_models (lb1): ghost has a gateway route but no replicas (model_deploy_models (model1))"]


def test_the_catalog_itself_is_checked():
    problems = F["catalog_check"]([IRIS, dict(IRIS, version="2"), {"name": "bare", "version": "1"},
                                   {"name": "typo", "version": "1", "image": "x", "replica": 2},
                                   {"name": "noversion", "image": "x"}])
    assert problems == [
        "modelops_models: iris is listed twice",
        "modelops_models: bare has neither a model_path to package nor a prebuilt image or archive",
        "modelops_models: typo has unknown keys replica",
        "modelops_models: noversion has no version",
    ]


def test_repeated_names_in_a_derived_list_are_named():
    problems = F["catalog_check"]([IRIS], routes=[{"name": "iris"}, {"name": "iris"}],
                                  deployments=[{"name": "iris", "version": "1", "archive": "/a.tar"}])
    assert problems == ["nginx_models: iris is listed twice"]
