"""The blue/green deploy filters (plugins/filter/deploy.py), called as Ansible calls them."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.modelops.serving.plugins.filter import deploy
from ansible_collections.modelops.serving.plugins.filter.deploy import FilterModule

F = FilterModule().filters()


def test_every_filter_is_registered_under_its_function_name():
    assert sorted(F) == sorted(["slot_port", "slot_upstreams", "replica_names", "device_requests", "target_slot",
                                "record_deploy", "record_rollback", "record_switched", "first_failure",
                                "deployment_problems"])
    for name, func in F.items():
        assert func is getattr(deploy, name)


def test_slot_ports_and_upstreams():
    assert F["slot_port"](8600, "a") == 8600
    assert F["slot_port"]("8600", "b") == 8650
    assert F["slot_port"](8600, "b", offset=100) == 8700
    assert F["slot_upstreams"](8600, "a", 2) == [{"address": "127.0.0.1:8600"}, {"address": "127.0.0.1:8601"}]
    assert F["slot_upstreams"](8600, "b", "3") == [{"address": "127.0.0.1:%d" % p} for p in (8650, 8651, 8652)]
    assert F["slot_upstreams"](9000, "a", 1, host="10.0.0.5") == [{"address": "10.0.0.5:9000"}]
    assert F["slot_upstreams"](8600, "a", 0) == []


def test_slot_upstreams_with_labels_name_each_replica():
    servers = F["slot_upstreams"](8600, "b", 2, labels={"model": "iris", "version": 2, "host": "model1"})
    assert servers == [
        {"address": "127.0.0.1:8650",
         "labels": {"model": "iris", "version": "2", "host": "model1", "slot": "b", "replica": "0"}},
        {"address": "127.0.0.1:8651",
         "labels": {"model": "iris", "version": "2", "host": "model1", "slot": "b", "replica": "1"}},
    ]
    # The caller's dict is not changed, and the slot and replica are the filter's own.
    given = {"model": "iris", "slot": "x", "replica": "9"}
    assert F["slot_upstreams"](8600, "a", 1, labels=given)[0]["labels"] == {"model": "iris", "slot": "a", "replica": "0"}
    assert given == {"model": "iris", "slot": "x", "replica": "9"}


def test_slot_upstreams_refuses_labels_that_are_not_a_dict():
    with pytest.raises(AnsibleFilterError, match="labels must be a dict"):
        F["slot_upstreams"](8600, "a", 1, labels=["iris"])


@pytest.mark.parametrize("args", [(8600, "c"), (8600, ""), ("http", "a")])
def test_slot_port_refuses_bad_slots_and_ports(args):
    with pytest.raises(AnsibleFilterError):
        F["slot_port"](*args)


def test_replica_names():
    assert F["replica_names"]("iris", "a", 2) == ["model-iris-a-0", "model-iris-a-1"]
    assert F["replica_names"]("iris", "b", 1) == ["model-iris-b-0"]
    with pytest.raises(AnsibleFilterError):
        F["replica_names"]("", "a", 1)
    with pytest.raises(AnsibleFilterError):
        F["replica_names"]("iris", "x", 1)


@pytest.mark.parametrize("model, wanted", [
    ({}, []),
    ({"gpus": 0}, []),
    ({"gpus": "0"}, []),
    ({"gpus": None}, []),
    ({"gpus": 2}, [{"driver": "nvidia", "count": 2, "capabilities": [["gpu"]]}]),
    ({"gpus": "1"}, [{"driver": "nvidia", "count": 1, "capabilities": [["gpu"]]}]),
    ({"gpus": "all"}, [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}]),
    ({"gpus": "ALL"}, [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}]),
    # Explicit ids win over a count.
    ({"gpus": 4, "gpu_ids": ["0", 3]}, [{"driver": "nvidia", "device_ids": ["0", "3"], "capabilities": [["gpu"]]}]),
    ({"gpus": 1, "gpu_ids": []}, [{"driver": "nvidia", "count": 1, "capabilities": [["gpu"]]}]),
])
def test_device_requests(model, wanted):
    assert F["device_requests"](model) == wanted


@pytest.mark.parametrize("gpus", ["some", -1, "1.5"])
def test_device_requests_refuses_what_is_not_a_count(gpus):
    with pytest.raises(AnsibleFilterError, match="iris"):
        F["device_requests"]({"name": "iris", "gpus": gpus})


def test_target_slot():
    entry = {"live_slot": "a", "live_image": "m/iris:1"}
    assert F["target_slot"]({}, "m/iris:1") == "a"
    assert F["target_slot"](None, "m/iris:1") == "a"
    assert F["target_slot"](entry, "m/iris:1") == "a"
    assert F["target_slot"](entry, "m/iris:2") == "b"
    assert F["target_slot"]({"live_slot": "b", "live_image": "m/iris:2"}, "m/iris:3") == "a"
    assert F["target_slot"]({"live_slot": "b", "live_image": "m/iris:2"}, "m/iris:2") == "b"


def test_record_deploy_first_then_next_version():
    first = F["record_deploy"]({}, "iris", "a", 1, "m/iris:1", 2, 8600)
    assert first == {"models": {"iris": {
        "live_slot": "a", "live_version": "1", "live_image": "m/iris:1",
        "previous_slot": "", "previous_version": "", "previous_image": "", "replicas": 2, "port": 8600}}}
    second = F["record_deploy"](first, "iris", "b", "2", "m/iris:2", "3", "8600")
    assert second["models"]["iris"] == {
        "live_slot": "b", "live_version": "2", "live_image": "m/iris:2",
        "previous_slot": "a", "previous_version": "1", "previous_image": "m/iris:1", "replicas": 3, "port": 8600}
    # The input record is not changed in place.
    assert first["models"]["iris"]["live_slot"] == "a"


def test_record_deploy_keeps_other_models_and_is_a_no_op_for_the_live_image():
    record = {"models": {"wine": {"live_slot": "b", "live_image": "m/wine:4"}}, "format": 1}
    after = F["record_deploy"](record, "iris", "a", "1", "m/iris:1", 1, 8700)
    assert after["models"]["wine"] == record["models"]["wine"] and after["format"] == 1
    assert F["record_deploy"](after, "iris", "a", "1", "m/iris:1", 1, 8700) == after
    with pytest.raises(AnsibleFilterError):
        F["record_deploy"]({}, "iris", "z", "1", "m/iris:1", 1, 8700)


def test_record_rollback_swaps_and_a_second_rollback_undoes_it():
    record = F["record_deploy"](F["record_deploy"]({}, "iris", "a", 1, "m/iris:1", 2, 8600),
                                "iris", "b", 2, "m/iris:2", 2, 8600)
    back = F["record_rollback"](record, "iris")
    assert back["models"]["iris"] == {
        "live_slot": "a", "live_version": "1", "live_image": "m/iris:1",
        "previous_slot": "b", "previous_version": "2", "previous_image": "m/iris:2", "replicas": 2, "port": 8600}
    assert F["record_rollback"](back, "iris") == record


@pytest.mark.parametrize("record", [{}, {"models": {}}, {"models": {"iris": {"live_slot": "a", "previous_slot": ""}}}])
def test_record_rollback_refuses_without_a_previous_version(record):
    with pytest.raises(AnsibleFilterError, match="iris has no previous version"):
        F["record_rollback"](record, "iris")


def test_record_switched():
    before = F["record_deploy"]({}, "iris", "a", 1, "m/iris:1", 2, 8600)
    before = F["record_deploy"](before, "wine", "a", 1, "m/wine:1", 1, 8700)
    after = F["record_deploy"](before, "iris", "b", 2, "m/iris:2", 2, 8600)
    assert F["record_switched"](after, before) == ["iris"]
    assert F["record_switched"](before, before) == []
    # A first deploy switched nothing that could go back.
    assert F["record_switched"](before, {}) == []
    assert F["record_switched"](after, None) == ["iris"]


def test_first_failure():
    loop = {"failed": True, "msg": "One or more items failed", "results": [
        {"failed": False, "msg": "fine"}, {"failed": True, "msg": "replica 1: sample output [1] != [2]"},
        {"failed": True, "msg": "replica 2: later"}]}
    assert F["first_failure"](loop) == "replica 1: sample output [1] != [2]"
    assert F["first_failure"]({"failed": True, "msg": "gate failed"}) == "gate failed"
    assert F["first_failure"]({"results": [{"failed": True}], "msg": "outer"}) == "outer"
    assert F["first_failure"]({}) == "unknown error"
    assert F["first_failure"](None, default="nothing said") == "nothing said"


def test_deployment_problems():
    good = [{"name": "iris", "port": 8600, "replicas": 2}, {"name": "wine", "port": 8602, "replicas": 3}]
    assert F["deployment_problems"](good) == []
    assert F["deployment_problems"]([]) == []
    problems = F["deployment_problems"]([
        {"name": "iris", "port": 8600, "replicas": 2}, {"name": "iris", "port": 9000},
        {"name": "wine", "port": 8601}, {"name": "big", "port": 7000, "replicas": 60},
        {"name": "gpu", "port": 6000, "gpus": "many"}, {"port": 5000}])
    assert "model_deploy_models: iris is listed twice" in problems
    assert "model_deploy_models: wine slot a port 8601 is also iris slot a's" in problems
    assert "model_deploy_models: big has 60 replicas; 1 to 50 fit a slot" in problems
    assert any(p.startswith("model_deploy_models: gpus of gpu") for p in problems)
    assert "model_deploy_models: an item has no name" in problems
    assert "model_deploy_models: wine slot b port 8651 is also iris slot b's" in problems
    assert len(problems) == 6
    # Slot b of one model may not land on slot a of another either.
    assert F["deployment_problems"]([{"name": "iris", "port": 8600}, {"name": "wine", "port": 8650}]) == [
        "model_deploy_models: wine slot a port 8650 is also iris slot b's"]
