"""Verify model_deploy on a real systemd host with a real inner Docker engine."""
import json

import pytest

REPLICAS = ["model-iris-a-0", "model-iris-a-1"]


def inspect(host, name):
    return json.loads(host.check_output("docker inspect %s" % name))[0]


@pytest.mark.parametrize("name", REPLICAS)
def test_replica_is_hardened(host, name):
    info = inspect(host, name)
    hc = info["HostConfig"]
    assert info["State"]["Running"]
    assert info["Config"]["User"] == "10001:10001"
    assert hc["ReadonlyRootfs"] is True
    assert hc["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in hc["SecurityOpt"]
    assert hc["Memory"] == 384 * 1024 * 1024
    assert hc["NanoCpus"] == 500000000
    assert hc["RestartPolicy"]["Name"] == "unless-stopped"
    # The model's latency objective (slo_p99_ms) beside its own environment.
    env = info["Config"]["Env"]
    assert "MODELOPS_SLO_P99_MS=500" in env and "MODELOPS_WORKERS=1" in env
    bindings = [b for port in hc["PortBindings"].values() for b in port]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings)


def test_replicas_answer_on_loopback_only(host):
    for port in (8600, 8601):
        out = host.check_output(
            "python3 -c \"import urllib.request as u, json; "
            "r=u.urlopen(u.Request('http://127.0.0.1:%d/predict', data=json.dumps({'instances': [[6.9, 3.2, 5.7, 2.3]]}).encode()));"
            "print(r.headers['X-Model-Version'], json.load(r)['predictions'])\"" % port)
        assert out.split(None, 1) == ["1", "[2]"]
    listening = host.check_output("ss -ltnH")
    assert "0.0.0.0:8600" not in listening and "127.0.0.1:8600" in listening


def test_record_names_the_live_version(host):
    record = json.loads(host.file("/etc/ansible/facts.d/modelops.fact").content_string)
    iris = record["models"]["iris"]
    assert iris["live_version"] == "1" and iris["live_slot"] == "a"
    assert iris["live_image"] == "modelops-testlab/iris:1"
    assert iris["previous_slot"] == ""


def test_container_healthcheck_reports_healthy(host):
    # Docker's own healthcheck (from the image) agrees with the health gate.
    status = host.check_output(
        "for i in $(seq 1 30); do s=$(docker inspect -f '{{.State.Health.Status}}' model-iris-a-0); "
        "[ \"$s\" = healthy ] && break; sleep 1; done; echo $s")
    assert status == "healthy"
