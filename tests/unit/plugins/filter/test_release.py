"""The release filters (plugins/filter/release.py): records from what hosts run, pins for a promotion."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.modelops.serving.plugins.filter import release
from ansible_collections.modelops.serving.plugins.filter.release import FilterModule

F = FilterModule().filters()
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
CATALOG = [{"name": "iris", "version": "2"}, {"name": "churn", "version": 7}]


def live(version, digest, name="iris"):
    return {name: {"version": version, "image": "ns/%s:%s" % (name, version), "digest": digest}}


def test_every_filter_is_registered_under_its_function_name():
    assert sorted(F) == ["bad_digests", "release_live", "release_pins", "release_record", "soak_fired",
                         "soak_unseen"]
    for name, func in F.items():
        assert func is getattr(release, name)


def test_a_record_lists_each_model_once_with_the_hosts_that_run_it():
    record = F["release_record"]({"m2": live(2, D2), "m1": live("2", D2)}, "staging", "1700000000.5",
                                 [{"host": "m1", "url": "https://10.0.0.1:443", "server_name": "m1"}],
                                 "https://10.0.0.9:9090")
    assert record == {"environment": "staging", "recorded_at": 1700000000.5,
                      "models": {"iris": {"version": "2", "image": "ns/iris:2", "digest": D2, "hosts": ["m1", "m2"]}},
                      "gateways": [{"host": "m1", "url": "https://10.0.0.1:443", "server_name": "m1"}],
                      "prometheus_url": "https://10.0.0.9:9090"}


def test_a_mixed_fleet_has_no_release_and_both_hosts_are_named():
    with pytest.raises(AnsibleFilterError, match=r"different images of iris: m1 runs 2 sha256:2+, m2 runs 2 sha256:3+"):
        F["release_record"]({"m1": live(2, D2), "m2": live(2, D3)}, "staging", 1)


@pytest.mark.parametrize("per_host, message", [
    ({}, "no model server reported"),
    ({"m1": {}}, "run no model"),
    ({"m1": live(2, "latest")}, "m1 reports no image digest for iris"),
    ({"m1": live(2, "sha256:" + "2" * 63)}, "no image digest"),
])
def test_records_without_what_a_promotion_needs_are_refused(per_host, message):
    with pytest.raises(AnsibleFilterError, match=message):
        F["release_record"](per_host, "staging", 1)


def test_pins_are_the_released_digests_of_the_models_asked_for():
    record = F["release_record"]({"m1": dict(live(2, D2), **live(7, D3, "churn"))}, "staging", 1)
    assert F["release_pins"](record, CATALOG) == {"iris": D2, "churn": D3}
    assert F["release_pins"](record, CATALOG, ["iris"]) == {"iris": D2}


def test_a_catalog_that_names_another_version_than_the_tested_one_is_refused():
    record = F["release_record"]({"m1": live(2, D2)}, "staging", 1)
    with pytest.raises(AnsibleFilterError, match="catalog names version 3, but staging tested version 2"):
        F["release_pins"](record, [{"name": "iris", "version": "3"}])


def test_every_problem_is_named_at_once():
    record = F["release_record"]({"m1": live(2, D2)}, "staging", 1)
    with pytest.raises(AnsibleFilterError) as err:
        F["release_pins"](record, [], ["iris", "ghost"])
    assert "iris is not in this inventory's model catalog" in str(err.value)
    assert "ghost is not in the release of staging (it has iris)" in str(err.value)


@pytest.mark.parametrize("bad", [None, {}, {"models": {}}, "staging"])
def test_a_malformed_record_is_refused_naming_its_keys(bad):
    with pytest.raises(AnsibleFilterError, match="must have environment, recorded_at, models, gateways"):
        F["release_pins"](bad, CATALOG)


def test_a_tampered_digest_is_refused():
    record = F["release_record"]({"m1": live(2, D2)}, "staging", 1)
    record["models"]["iris"]["digest"] = "iris:2"
    with pytest.raises(AnsibleFilterError, match="iris has no image digest in the release"):
        F["release_pins"](record, CATALOG)


def test_what_a_host_runs_comes_from_its_live_replicas_and_its_record():
    record = {"models": {"iris": {"live_slot": "b", "live_version": "2", "live_image": "ns/iris:2"}}}
    results = [{"item": "iris", "exists": True, "container": {"Image": D2}},
               {"item": "unrecorded", "exists": True, "container": {"Image": D3}}]
    assert F["release_live"](results, record) == {"iris": {"version": "2", "image": "ns/iris:2", "digest": D2}}
    gone = F["release_live"]([{"item": "iris", "exists": False, "container": None}], record)
    assert gone["iris"]["digest"] == ""
    with pytest.raises(AnsibleFilterError, match="m1 reports no image digest for iris"):
        F["release_record"]({"m1": gone}, "staging", 1)


def vector(*labels):
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": m, "value": [1, "1"]} for m in labels]}}


def test_fired_alerts_are_named_with_their_model_version_and_host():
    answer = vector({"alertname": "ModelopsModelNotReady", "model": "iris", "version": "3", "host": "stage1"},
                    {"alertname": "ModelopsHostDown", "host": "stage1"},
                    {"alertname": "ModelopsModelNotReady", "model": "iris", "version": "3", "host": "stage1"})
    assert F["soak_fired"](answer) == ["ModelopsHostDown (on stage1)", "ModelopsModelNotReady (iris 3 on stage1)"]
    assert F["soak_fired"](vector()) == []


@pytest.mark.parametrize("answer", [None, {}, {"status": "error", "error": "bad query"},
                                    {"status": "success", "data": {"resultType": "matrix", "result": []}}])
def test_a_prometheus_error_never_reads_as_no_alert(answer):
    with pytest.raises(AnsibleFilterError, match="did not answer with a vector"):
        F["soak_fired"](answer)
    with pytest.raises(AnsibleFilterError, match="did not answer with a vector"):
        F["soak_unseen"](answer, {}, {})


def test_released_versions_prometheus_never_saw_serving_are_named():
    record = F["release_record"]({"m1": dict(live(2, D2), **live(7, D3, "churn"))}, "staging", 1)
    pins = F["release_pins"](record, CATALOG)
    assert F["soak_unseen"](vector({"model": "iris", "version": "2"}), record, pins) == ["churn 7"]
    assert F["soak_unseen"](vector({"model": "iris", "version": "1"}, {"model": "churn", "version": "7"}),
                            record, pins) == ["iris 2"]
    assert F["soak_unseen"](vector({"model": "iris", "version": "2"}, {"model": "churn", "version": "7"}),
                            record, pins) == []


def test_bad_digests_names_every_value_that_is_not_an_image_digest():
    assert F["bad_digests"]({"iris": D2, "churn": "latest", "ranker": "sha256:" + "A" * 64, "x": None}) == \
        ["churn", "ranker", "x"]
    assert F["bad_digests"]({}) == []
    with pytest.raises(AnsibleFilterError, match="expected a mapping"):
        F["bad_digests"](["iris"])
