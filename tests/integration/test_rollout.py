"""The rollout proof: a real multi-host lab under client load.

Preconditions (the Makefile's `rollout-test` target makes them): the lab fleet
of inventories/lab (one load balancer, three model servers) is converged by
playbooks/site.yml and serves iris version 1 behind TLS.

While a bounded load generator sends V2 inference requests over TLS through
the load balancer for the whole run, this test
1. rolls iris 1 -> 2 out (rolling_update.yml): every response must be 200 and
   come from version 1 or 2, and every host ends on 2;
2. rolls out a broken version 3 (its answers fail the health gate's sample
   check): the canary fails and is left on 2, the rollout stops, no client
   request fails, the fleet still serves 2;
3. rolls the fleet back to 1 (rollback.yml) with no client error.
Rollout times per host and request counts go to tests/output/rollout-report.json.
"""
import http.client
import json
import os
import socket
import ssl
import subprocess
import time

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from loadgen import LoadGenerator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INVENTORY = os.path.join(ROOT, "inventories", "lab")
DEMO = os.path.join(ROOT, ".cache", "demo")
OUTPUT = os.path.join(ROOT, "tests", "output")
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
SAMPLE = [[5.1, 3.5, 1.4, 0.2], [5.0, 2.0, 3.5, 1.0], [6.9, 3.2, 5.7, 2.3]]
EXPECTED = [0, 1, 2]
LB = ("172.30.77.10", "lb1")
MODEL_HOSTS = {"model1": "172.30.77.11", "model2": "172.30.77.12", "model3": "172.30.77.13"}


def env():
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".cache", "collections"),
                ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), PATH=VENV_BIN + ":" + os.environ["PATH"],
                ANSIBLE_FORCE_COLOR="0")


def playbook(name, *extra, timeout=1800):
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", INVENTORY, os.path.join(ROOT, "playbooks", name)] + list(extra)
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout, check=False)
    return proc


def lab_secret(name):
    path = os.path.join(ROOT, "lab", ".state", name)
    with open(path) as handle:
        return handle.read().strip()


@pytest.fixture(scope="module")
def ca_file():
    path = os.path.join(ROOT, "lab", ".state", "pki", "ca.crt")
    assert os.path.exists(path), "the lab's CA is missing: run `make demo` first"
    return path


@pytest.fixture(scope="module")
def api_key():
    return lab_secret("api_key")


def gateway_version(ip, name, ca_file, api_key):
    """Ask one host's TLS gateway which version of iris it serves."""
    ctx = ssl.create_default_context(cafile=ca_file)
    raw = socket.create_connection((ip, 443), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname=name)
    conn = http.client.HTTPSConnection(ip, 443, timeout=10, context=ctx)
    conn.sock = sock
    conn.request("POST", "/v2/models/iris/infer", body=json.dumps(
        {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": SAMPLE}]}),
        headers={"Authorization": "Bearer " + api_key, "Content-Type": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 200, body[:300]
    return resp.getheader("X-Model-Version")


def package(version, model, expected=None):
    """Package one iris version on the controller (image + archive for the hosts)."""
    directory = os.path.join(DEMO, "iris-v%s" % version)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "iris.joblib")
    joblib.dump(model, path)
    extra = {"model_path": path, "model_name": "iris", "model_version": str(version),
             "model_archive_path": os.path.join(DEMO, "iris-%s.tar" % version),
             "wheelhouse": os.path.join(ROOT, ".cache", "wheelhouse"), "wheelhouse_fill": True}
    if expected is not None:
        extra.update({"model_sample": {"instances": SAMPLE}, "model_expected": expected})
    proc = playbook("package.yml", "-e", json.dumps(extra))
    assert proc.returncode == 0, proc.stdout[-3000:]


def models_var(version):
    return json.dumps({"model_deploy_models": [{
        "name": "iris", "version": str(version), "replicas": 2, "port": 8600,
        "archive": os.path.join(DEMO, "iris-%s.tar" % version), "memory": "512m", "cpus": 1.0,
        "sample": {"instances": SAMPLE}, "expected": EXPECTED}]})


def load(ca_file, api_key):
    return LoadGenerator(
        LB[0], 443, "/v2/models/iris/infer",
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [SAMPLE[2]]}]},
        headers={"Authorization": "Bearer " + api_key}, ca_file=ca_file, server_name=LB[1],
        workers=4, max_seconds=900, max_requests=400000).start()


def rollout_times(stdout):
    """The per-host times the report play prints (`model1: 51.1` lines after its task header)."""
    lines = stdout.splitlines()
    times = {}
    for i, line in enumerate(lines):
        if "Show the time each host took" in line:
            for follow in lines[i + 1:i + 12]:
                key, _, value = follow.strip().partition(": ")
                if key in MODEL_HOSTS:
                    times[key] = value
    return times


def test_rollout_under_load(ca_file, api_key):
    os.makedirs(OUTPUT, exist_ok=True)
    data = load_iris()
    x, y = data.data, data.target
    v2 = RandomForestClassifier(n_estimators=30, max_depth=4, random_state=7).fit(x, y)
    assert v2.predict(SAMPLE).tolist() == EXPECTED
    package(2, v2, EXPECTED)
    # Version 3 is "broken": trained on shuffled labels, its answers fail the sample check.
    rng = np.random.default_rng(3)
    v3 = RandomForestClassifier(n_estimators=5, max_depth=2, random_state=3).fit(x, rng.permutation(y))
    assert v3.predict(SAMPLE).tolist() != EXPECTED
    package(3, v3)

    # Start from version 1 everywhere (a no-op on a fleet that site.yml just converged).
    proc = playbook("rolling_update.yml", "-e", models_var(1))
    assert proc.returncode == 0, proc.stdout[-3000:]
    for host, ip in MODEL_HOSTS.items():
        assert gateway_version(ip, host, ca_file, api_key) == "1", "the fleet must start on version 1"
    report = {}

    def under_load(step, playbook_name, *args):
        """Run one playbook while the load generator runs; returns (process, load report)."""
        gen = load(ca_file, api_key)
        time.sleep(2)
        t0 = time.monotonic()
        proc = playbook(playbook_name, *args)
        took = round(time.monotonic() - t0, 1)
        time.sleep(2)
        result = gen.stop()
        result.update(rollout_seconds=took, per_host=rollout_times(proc.stdout))
        report[step] = result
        return proc, result

    def fleet_serves(version):
        for host, ip in MODEL_HOSTS.items():
            assert gateway_version(ip, host, ca_file, api_key) == version, host

    # 1. v1 -> v2 under load.
    proc, step = under_load("v1_to_v2", "rolling_update.yml", "-e", models_var(2))
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert step["failed"] == 0, step
    assert set(step["versions"]) <= {"1", "2"} and "2" in step["versions"], step
    fleet_serves("2")

    # 2. A broken v3: the canary fails its health gate, the rollout stops.
    proc, step = under_load("v2_to_broken_v3", "rolling_update.yml", "-e", models_var(3))
    assert proc.returncode != 0, "a failed canary must fail the run"
    assert "Rollout stopped" in proc.stdout and "sample output" in proc.stdout, proc.stdout[-4000:]
    assert step["failed"] == 0, step
    assert set(step["versions"]) == {"2"}, step
    fleet_serves("2")

    # 3. Back to v1 everywhere.
    proc, step = under_load("rollback_to_v1", "rollback.yml")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert step["failed"] == 0, step
    fleet_serves("1")

    # 4. Maintenance of one host: drained at the load balancer, its gateway
    #    stopped for a while, verified, put back; clients see no error.
    work = os.path.join(ROOT, "tests", "integration", "files", "maintenance_work.yml")
    proc, step = under_load("maintenance_model2", "maintenance.yml", "-e", "maintenance_host=model2",
                            "-e", "maintenance_tasks=%s" % work)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert step["failed"] == 0, step
    assert gateway_version(MODEL_HOSTS["model2"], "model2", ca_file, api_key) == "1"

    with open(os.path.join(OUTPUT, "rollout-report.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps(report, indent=2))
