"""The rollout proof: a real multi-host lab under client load.

Preconditions (the Makefile's `rollout-test` target makes them): the test lab
fleet (one load balancer, three model servers) is converged by
playbooks/site.yml and serves iris version 1 behind TLS.

While a bounded load generator sends V2 inference requests over TLS through
the load balancer (kept-alive connections, as real clients keep them), this test
1. takes iris 2 through staging to production, every playbook run as an AWX
   job (ansible-runner): rolling_update.yml on the staging environment writes
   its release record (what staging runs, by digest), then promote.yml checks
   staging live and its alerts over a soak window and rolls that exact image
   out over production: every response must be 200 and come from version 1 or
   2, every host ends on 2, on the digest staging ran; a release whose digest
   differs from the archive production would load is refused naming both;
   then a broken version 3 fails in staging, and promote.yml refuses to take
   anything to production while the catalog names it: production never sees it;
2. rolls the broken version 3 out over production directly: the canary fails
   its health gate (the sample check) and is left on 2, the rollout stops, no
   client request fails, the fleet still serves 2;
3. rolls the fleet back to 1 (rollback.yml) with no client error;
4. runs ten maintenance cycles (maintenance.yml round the model servers: drain
   at the gateway and the load balancer, work, verify, undrain);
5. changes the load balancer's certificate, API keys and routes (each live
   through a reload of its NGINX), then reverts them.
Every step must end with zero failed client requests. Before all that, the
inventory's model catalog check must refuse lists that disagree. The figures, each failure
with the playbook task that was running, and the task timelines go to
tests/output/rollout-report.json after every step.
"""
import datetime
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
from runner_job import run_job

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
# The test lab (its own names, addresses, state, model files and image namespace),
# never the demo's: the suite leaves what a user built alone.
INVENTORY = os.environ.get("LAB_INVENTORY", os.path.join(ROOT, "inventories", "testlab"))
LAB = json.loads(subprocess.check_output([os.path.join(VENV_BIN, "python"), os.path.join(ROOT, "lab", "lab.py"),
                                          "info", "--inventory", INVENTORY]))
DEMO = os.path.join(ROOT, LAB["vars"]["lab_cache"])
STATE = LAB["state"]
NAMESPACE = LAB["vars"]["modelops_image_namespace"]
OUTPUT = os.path.join(ROOT, "tests", "output")
SAMPLE = [[5.1, 3.5, 1.4, 0.2], [5.0, 2.0, 3.5, 1.0], [6.9, 3.2, 5.7, 2.3]]
EXPECTED = [0, 1, 2]
LB = (LAB["hosts"][LAB["groups"]["loadbalancers"][0]], LAB["groups"]["loadbalancers"][0])
MODEL_HOSTS = {host: LAB["hosts"][host] for host in LAB["groups"]["model_servers"]}
# Its staging environment: a lab of its own (own CA, API key, monitoring password) where a
# version runs before playbooks/promote.yml takes the exact image it tested to production.
STAGING_INVENTORY = os.environ.get("LAB_STAGING_INVENTORY", INVENTORY.rstrip("/") + "-staging")
STAGING = json.loads(subprocess.check_output([os.path.join(VENV_BIN, "python"), os.path.join(ROOT, "lab", "lab.py"),
                                              "info", "--inventory", STAGING_INVENTORY]))
STAGING_HOSTS = {host: STAGING["hosts"][host] for host in STAGING["groups"]["model_servers"]}


PROFILE = {"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"}


def env():
    # profile_tasks stamps every task with the time it started: the report lays
    # each client failure beside the task that was running.
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".cache", "collections"),
                ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), PATH=VENV_BIN + ":" + os.environ["PATH"],
                ANSIBLE_FORCE_COLOR="0", ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks")


def playbook(name, *extra, timeout=1800):
    path = name if os.path.isabs(name) else os.path.join(ROOT, "playbooks", name)
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", INVENTORY, path] + list(extra)
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout, check=False)
    return proc


def lab_secret(name, state=STATE):
    path = os.path.join(state, name)
    with open(path) as handle:
        return handle.read().strip()


@pytest.fixture(scope="module")
def ca_file():
    path = os.path.join(STATE, "pki", "ca.crt")
    assert os.path.exists(path), "the test lab's CA is missing: run `make integration` first"
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


def lb_certificate_serial(ca_file):
    """Serial number of the certificate the load balancer presents now."""
    ctx = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection((LB[0], 443), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=LB[1]) as sock:
            return sock.getpeercert()["serialNumber"]


def package(version, model, expected=None):
    """Package one iris version on the controller (image + archive for the hosts)."""
    directory = os.path.join(DEMO, "iris-v%s" % version)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "iris.joblib")
    joblib.dump(model, path)
    extra = {"model_path": path, "model_name": "iris", "model_version": str(version),
             "model_repository": NAMESPACE + "/iris",
             "model_archive_path": os.path.join(DEMO, "iris-%s.tar" % version),
             "wheelhouse": os.path.join(ROOT, ".cache", "wheelhouse"), "wheelhouse_fill": True}
    if expected is not None:
        extra.update({"model_sample": {"instances": SAMPLE}, "model_expected": expected})
    proc = playbook("package.yml", "-e", json.dumps(extra))
    assert proc.returncode == 0, proc.stdout[-3000:]


def models_var(version):
    """The inventory's model catalog with iris at this version (what a site edits to roll one out)."""
    return json.dumps({"modelops_models": [{
        "name": "iris", "version": str(version), "model_path": os.path.join(DEMO, "iris-v%s" % version, "iris.joblib"),
        "image": NAMESPACE + "/iris", "archive": os.path.join(DEMO, "iris-%s.tar" % version),
        "sample": {"instances": SAMPLE}, "expected": EXPECTED, "slo_p99_ms": 250, "replicas": 2, "port": 8600,
        "memory": "512m", "cpus": 1.0, "route": {}}]})


def load(ca_file, api_key):
    return LoadGenerator(
        LB[0], 443, "/v2/models/iris/infer",
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [SAMPLE[2]]}]},
        headers={"Authorization": "Bearer " + api_key}, ca_file=ca_file, server_name=LB[1],
        workers=4, max_seconds=900, max_requests=400000).start()


def task_timeline(stdout):
    """[(epoch seconds, task name)] from profile_tasks' stamp under each task header."""
    timeline = []
    task = None
    for line in stdout.splitlines():
        if line.startswith("TASK ["):
            task = line[6:line.rfind("]")]
            continue
        if task is not None:
            try:
                stamp = datetime.datetime.strptime(" ".join(line.split()[:6]), "%A %d %B %Y %H:%M:%S %z")
            except ValueError:
                continue
            timeline.append((stamp.timestamp(), task))
            task = None
    return timeline


def annotate(failures, timeline):
    """Each failure with the playbook task that had started last before it."""
    out = []
    for failure in failures:
        running = [name for when, name in timeline if when <= failure["time"] + 0.5]
        out.append(dict(failure, during_task=running[-1] if running else None))
    return out


def rollout_times(stdout):
    """The per-host times the report play prints: {host: {"staged": s, "updated": s}} from its
    `staged:` and `updated:` maps (`model1: 51.1` lines after its task header)."""
    lines = stdout.splitlines()
    times = {}
    for i, line in enumerate(lines):
        if "Show the time each host took" in line:
            section = None
            for follow in lines[i + 1:i + 20]:
                key, _, value = follow.strip().partition(":")
                if key in ("staged", "updated"):
                    section = key
                elif key in MODEL_HOSTS and section:
                    times.setdefault(key, {})[section] = value.strip()
    return times


def test_catalog_check_refuses_lists_that_disagree_before_any_host_is_touched():
    """site.yml and rolling_update.yml start with catalog_check.yml: a route without replicas stops them."""
    proc = playbook("catalog_check.yml")
    assert proc.returncode == 0, proc.stdout[-3000:]
    proc = playbook("rolling_update.yml", "-e", json.dumps({"model_deploy_models": []}))
    assert proc.returncode != 0
    said = " ".join(proc.stdout.split())  # the result callback folds long messages
    for host in MODEL_HOSTS:
        assert "%s: nginx_models: iris has a gateway route but no replicas (model_deploy_models)" % host in said, said
    assert "Update the model servers, canary first" not in said, "no host may be touched"
    proc = playbook("site.yml", "-e", json.dumps({"modelops_models": json.loads(models_var(1))["modelops_models"]
                                                  + [{"name": "ghost", "version": "1"}]}))
    assert proc.returncode != 0
    said = " ".join(proc.stdout.split())
    assert "modelops_models: ghost has neither a model_path to package nor a prebuilt image or archive" in said, said
    assert "Package the models the inventory lists" not in said, "nothing may be packaged"


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

    # The fleet starts on version 1 everywhere: `make integration` converged it from the
    # inventory's catalog (and in `make test`, `make collection-lab` has just run
    # rolling_update.yml on it with changed=0), so no rollout is needed to get there.
    for host, ip in MODEL_HOSTS.items():
        assert gateway_version(ip, host, ca_file, api_key) == "1", "the fleet must start on version 1"
    report = {}

    def under_load(step, playbook_name, *args):
        """Run one playbook while the load generator runs; returns (process, load report).

        The report is written after every step, so a failing step leaves its figures,
        its failures and the task timeline behind."""
        gen = load(ca_file, api_key)
        time.sleep(2)
        t0 = time.monotonic()
        proc = playbook(playbook_name, *args)
        took = round(time.monotonic() - t0, 1)
        time.sleep(2)
        result = gen.stop()
        timeline = task_timeline(proc.stdout)
        result.update(rollout_seconds=took, per_host=rollout_times(proc.stdout), playbook_rc=proc.returncode,
                      failures=annotate(result["failures"], timeline),
                      timeline=[{"time": round(when, 3), "task": name} for when, name in timeline])
        report[step] = result
        with open(os.path.join(OUTPUT, "rollout-report.json"), "w") as handle:
            json.dump(report, handle, indent=2)
        return proc, result

    def fleet_serves(version):
        for host, ip in MODEL_HOSTS.items():
            assert gateway_version(ip, host, ca_file, api_key) == version, host

    # 1. v2 through staging to production, every step an AWX job (ansible-runner), while
    #    clients call production through its load balancer.
    staging_ca = os.path.join(STAGING["state"], "pki", "ca.crt")
    staging_key = lab_secret("api_key", STAGING["state"])
    # How production reaches staging's checks (its CA, API key, Prometheus identity, a 30 s soak
    # window) is production's inventory's own: inventories/testlab/group_vars/all/promote.yml.
    catalog = json.loads(models_var(2))
    gen = load(ca_file, api_key)
    time.sleep(2)
    t0 = time.monotonic()
    staged = run_job("rolling_update.yml", STAGING_INVENTORY, catalog, ident="staging-v2", envvars=PROFILE)
    staging_seconds = round(time.monotonic() - t0, 1)
    assert staged.ok, staged.stdout[-4000:]
    release = staged.artifacts.get("promote_release")
    assert release and release["models"]["iris"]["version"] == "2", staged.artifacts
    assert release["models"]["iris"]["hosts"] == sorted(STAGING_HOSTS), release
    for host, ip in STAGING_HOSTS.items():
        assert gateway_version(ip, host, staging_ca, staging_key) == "2", host
    t1 = time.monotonic()
    promoted = run_job("promote.yml", INVENTORY, dict(catalog, promote_release=release),
                       ident="promote-v2", envvars=PROFILE)
    promote_seconds = round(time.monotonic() - t1, 1)
    time.sleep(2)
    result = gen.stop()
    timeline = task_timeline(staged.stdout) + task_timeline(promoted.stdout)
    result.update(staging_seconds=staging_seconds, rollout_seconds=promote_seconds,
                  per_host=rollout_times(promoted.stdout), playbook_rc=promoted.rc, job_status=promoted.status,
                  release=release, failures=annotate(result["failures"], timeline),
                  timeline=[{"time": round(when, 3), "task": name} for when, name in timeline])
    report["v1_to_v2_through_staging"] = result
    with open(os.path.join(OUTPUT, "rollout-report.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    assert promoted.ok, promoted.stdout[-4000:]
    assert "Ask staging's Prometheus which alerts fired for the release during the soak window" in promoted.stdout, \
        "the soak gate must have run"
    assert result["failed"] == 0, result
    assert set(result["versions"]) <= {"1", "2"} and "2" in result["versions"], result
    fleet_serves("2")
    # Production runs the very image staging ran: its own release record, read from its live replicas.
    production = promoted.artifacts.get("promote_release")
    assert production and production["models"]["iris"]["hosts"] == sorted(MODEL_HOSTS), promoted.artifacts
    assert production["models"]["iris"]["digest"] == release["models"]["iris"]["digest"], (production, release)

    # A release whose digest is not what production's archive holds: refused before any host is
    # touched, naming both digests.
    forged = json.loads(json.dumps(release))
    forged["models"]["iris"]["digest"] = "sha256:" + "0" * 64
    refused = run_job("promote.yml", INVENTORY, dict(catalog, promote_release=forged),
                      ident="promote-forged")
    assert not refused.ok
    said = " ".join(refused.stdout.split())
    assert forged["models"]["iris"]["digest"] in said and release["models"]["iris"]["digest"] in said, said[-3000:]
    assert "Update the model servers, canary first" not in said, "no production host may be touched"

    # A host whose image under the tag is not the pinned one stops the rollout while the images are
    # staged, before any host switches (what protects registry pulls, where the controller has no
    # archive to check).
    pinned = "sha256:" + "1" * 64
    refused = run_job("rolling_update.yml", INVENTORY, dict(catalog, rollout_digests={"iris": pinned}),
                      ident="pinned-elsewhere")
    assert not refused.ok
    said = " ".join(refused.stdout.split())
    assert "the image released for it is %s, but %s/iris:2 here is %s" % (
        pinned, NAMESPACE, release["models"]["iris"]["digest"]) in said, said[-3000:]
    assert "Rollout stopped" in said and "No host was switched" in said, said[-3000:]
    fleet_serves("2")

    # A broken v3 stops at staging (its canary fails the sample check and is returned to 2), and
    # promote.yml refuses to take anything while the catalog names 3: production never sees it.
    broken = json.loads(models_var(3))
    staged3 = run_job("rolling_update.yml", STAGING_INVENTORY, broken, ident="staging-v3")
    assert not staged3.ok and "Rollout stopped" in staged3.stdout, staged3.stdout[-4000:]
    assert "promote_release" not in staged3.artifacts, "a failed staging run hands no release on"
    for host, ip in STAGING_HOSTS.items():
        assert gateway_version(ip, host, staging_ca, staging_key) == "2", host
    refused = run_job("promote.yml", INVENTORY, dict(broken, promote_release=release),
                      ident="promote-v3")
    assert not refused.ok
    said = " ".join(refused.stdout.split())
    assert "catalog names version 3, but testlab-staging tested version 2" in said, said[-3000:]
    assert "Update the model servers, canary first" not in said, "no production host may be touched"
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

    # 4. Ten maintenance cycles (maintenance.yml, round the model servers): each host
    #    drained at its gateway and at the load balancer, the first one's gateway
    #    stopped for a while, verified, put back; no client request may fail.
    work = os.path.join(ROOT, "tests", "integration", "files", "maintenance_work.yml")
    cycles = os.path.join(ROOT, "tests", "integration", "files", "maintenance_cycles.yml")
    proc, step = under_load("maintenance_10_cycles", cycles, "-e", "maintenance_work_file=%s" % work)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert step["failed"] == 0, step
    assert proc.stdout.count("Mark the gateway ready again") == 10, "ten drain/undrain cycles"
    for host, ip in MODEL_HOSTS.items():
        assert gateway_version(ip, host, ca_file, api_key) == "1", host

    # 5. Client-facing changes on the load balancer (a re-issued certificate, an API
    #    key added, a new model route), then reverted: each goes live through a
    #    reload of the LB's NGINX while clients keep their connections busy.
    edge = os.path.join(ROOT, "tests", "integration", "files", "edge_changes.yml")
    serial = lb_certificate_serial(ca_file)
    proc, step = under_load("lb_changes_apply", edge, "-e", "edge_change=apply")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert step["failed"] == 0, step
    assert lb_certificate_serial(ca_file) != serial, "the load balancer serves its re-issued certificate"
    proc, step = under_load("lb_changes_revert", edge, "-e", "edge_change=revert")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert step["failed"] == 0, step
    print(json.dumps(report, indent=2))
