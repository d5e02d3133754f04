"""The observability proof, on the test lab test_rollout.py leaves converged.

Prometheus on mon1 must see what the inventory implies and its alerts must
really fire, end to end, through Alertmanager:
1. every target the inventory implies answers (`up == 1`): every host's node
   exporter, every NGINX (the gateways and the load balancer), every live model
   replica (found through the gateways' discovery documents), Prometheus and
   Alertmanager;
2. a missing or wrong password, or no client certificate, gets 401 from the
   node exporter, from a gateway's monitoring server, from Prometheus and from
   Alertmanager; the monitoring ports are closed to a non-monitoring address;
3. skewed inputs sent through the load balancer drive ModelopsFeatureDrift to
   firing, and Alertmanager's API shows the alert;
4. ground truth posted for earlier answers (wrong labels) drives
   ModelopsAccuracyLow to firing; unknown ids and wrong shapes get a 4xx JSON
   error that names the problem;
5. a stopped replica fires ModelopsModelNotReady, which resolves once
   playbooks/site.yml has healed it;
6. every panel of every dashboard the collection ships returns data from this
   Prometheus.
The lab fires alerts within seconds (inventories/testlab: lab_alert_for,
lab_scrape_interval); the timings are the lab's, the rules are the collection's.
"""
import json
import os
import subprocess
import time
import uuid

import pytest
import requests

from test_rollout import INVENTORY, LAB, LB, MODEL_HOSTS, ROOT, SAMPLE, STATE, env, lab_secret

import panels

MON = LAB["groups"]["monitoring"][0]
MON_IP = LAB["hosts"][MON]
PROMETHEUS = "https://%s:9090" % MON_IP
ALERTMANAGER = "https://%s:9093" % MON_IP
USER = LAB["vars"]["modelops_monitoring_user"]
CA = os.path.join(STATE, "pki", "ca.crt")
NGINX_HOSTS = LAB["groups"]["model_servers"] + LAB["groups"]["loadbalancers"]
REPLICAS = 2  # iris's replicas in the lab's model catalog
WAIT = 180


@pytest.fixture(scope="module")
def password():
    return lab_secret("monitoring_password")


@pytest.fixture(scope="module")
def api_key():
    return lab_secret("api_key")


def prom(password, query):
    resp = requests.get(PROMETHEUS + "/api/v1/query", params={"query": query}, auth=(USER, password),
                        verify=CA, timeout=15)
    assert resp.status_code == 200, resp.text[:300]
    body = resp.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(what, check, timeout=WAIT, every=3):
    """Poll check() until it returns a true value; fail naming what did not happen and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail("%s did not happen within %d s (last: %r)" % (what, timeout, last))


def firing(password, alert, **labels):
    selector = ",".join(['alertname="%s"' % alert, 'alertstate="firing"']
                        + ['%s="%s"' % kv for kv in labels.items()])
    return prom(password, "ALERTS{%s}" % selector)


def alertmanager_alerts(password, alert):
    resp = requests.get(ALERTMANAGER + "/api/v2/alerts", params={"filter": 'alertname="%s"' % alert},
                        auth=(USER, password), verify=CA, timeout=15)
    assert resp.status_code == 200, resp.text[:300]
    return resp.json()


def on_host(host, *argv):
    """Run a command on a lab host (as root, through the engine: the test's own probe, not a user path)."""
    return subprocess.run(["docker", "exec", LAB["prefix"] + host] + list(argv),
                          capture_output=True, text=True, timeout=60, check=False)


def status_from(host, url, *curl_args):
    """The HTTP status a client on `host` gets (000 when no HTTP answer: refused, reset, TLS failure)."""
    proc = on_host(host, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                   "--cacert", "/etc/modelops/pki/ca.crt", *curl_args, url)
    return proc.stdout.strip()


def infer(api_key, rows, request_id=None):
    headers = {"Authorization": "Bearer " + api_key}
    if request_id:
        headers["X-Request-ID"] = request_id
    resp = requests.post("https://%s/v2/models/iris/infer" % LB[0], headers=headers, verify=CA, timeout=15,
                         json={"inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32",
                                           "data": rows}]})
    assert resp.status_code == 200, resp.text[:300]
    return resp


def feedback(api_key, request_id, truth):
    return requests.post("https://%s/v2/models/iris/feedback" % LB[0], verify=CA, timeout=15,
                         headers={"Authorization": "Bearer " + api_key, "X-Request-ID": request_id},
                         json={"id": request_id, "truth": truth})


def test_every_target_the_inventory_implies_is_up(password):
    expected = {("node", h) for h in LAB["hosts"]} | {("nginx", h) for h in NGINX_HOSTS}

    def targets():
        up = prom(password, "up")
        seen = {(r["metric"]["job"], r["metric"].get("host", "")): r["value"][1] for r in up}
        models = [r for r in up if r["metric"]["job"] == "model"]
        per_host = {h: [r for r in models if r["metric"].get("host") == h] for h in MODEL_HOSTS}
        ready = (all(seen.get(k) == "1" for k in expected)
                 and all(len(rs) == REPLICAS and all(r["value"][1] == "1" for r in rs) for rs in per_host.values())
                 and any(r["metric"]["job"] == "prometheus" and r["value"][1] == "1" for r in up)
                 and any(r["metric"]["job"] == "alertmanager" and r["value"][1] == "1" for r in up))
        return ready and up

    up = wait_for("up == 1 for every node, NGINX and live replica", targets)
    models = [r["metric"] for r in up if r["metric"]["job"] == "model"]
    for labels in models:
        # Every replica target says which model, version, slot, host and replica it is.
        assert {"model", "version", "slot", "host", "replica"} <= set(labels), labels
        assert labels["model"] == "iris"
    # The replicas of one host all serve the live slot.
    for host in MODEL_HOSTS:
        assert len({m["slot"] for m in models if m["host"] == host}) == 1, models


def test_wrong_or_missing_credentials_get_401(password):
    model_host = next(iter(MODEL_HOSTS))
    ip = MODEL_HOSTS[model_host]
    protected = {
        "node exporter": "https://%s:9100/metrics" % ip,
        "gateway monitoring server": "https://%s:9180/nginx/metrics" % ip,
        "Prometheus": PROMETHEUS + "/api/v1/query?query=up",
        "Alertmanager": ALERTMANAGER + "/api/v2/status",
    }
    for name, url in protected.items():
        assert status_from(MON, url) == "401", "%s answers without credentials" % name
        assert status_from(MON, url, "-u", USER + ":not-the-password") == "401", "%s takes a wrong password" % name
        assert status_from(MON, url, "-u", USER + ":" + password) == "200", "%s refuses the right password" % name
    # A client certificate from the lab CA is the other way into the monitoring server.
    cert = ["--cert", "/etc/modelops/pki/server.crt", "--key", "/etc/modelops/pki/private/server.key"]
    assert status_from(MON, protected["gateway monitoring server"], *cert) == "200"
    # A model replica's metrics and the discovery document sit behind the same door.
    assert status_from(MON, "https://%s:9180/sd/iris.json" % ip) == "401"
    # Not from a client address: firewalld drops the monitoring ports there
    # (the load balancer is a lab host but not a monitoring host).
    for port in (9100, 9180):
        assert status_from(LB[1], "https://%s:%d/metrics" % (ip, port), "-u", USER + ":" + password) == "000"


def test_skewed_inputs_fire_feature_drift_at_alertmanager(password, api_key):
    # Flowers far outside the reference data's range on every feature.
    skewed = [[7.9, 4.4, 6.9, 2.5]] * 50
    for _ in range(60):
        infer(api_key, skewed)
    alerts = wait_for("ModelopsFeatureDrift firing in Prometheus", lambda: firing(password, "ModelopsFeatureDrift"))
    assert {a["metric"]["model"] for a in alerts} == {"iris"}, alerts
    delivered = wait_for("ModelopsFeatureDrift at Alertmanager",
                         lambda: [a for a in alertmanager_alerts(password, "ModelopsFeatureDrift")
                                  if a["status"]["state"] == "active"])
    assert delivered[0]["labels"]["feature"], delivered[0]
    # Normal flowers again, so that the later proofs start from a sane input mix.
    for _ in range(60):
        infer(api_key, SAMPLE * 16)


def test_wrong_labels_fire_accuracy_low(password, api_key):
    run = uuid.uuid4().hex[:8]
    ids = ["acc-%s-%03d" % (run, i) for i in range(40)]
    for rid in ids:
        infer(api_key, SAMPLE, request_id=rid)
    for rid in ids:
        # The model answers 0, 1, 2 for these three flowers: every label is wrong.
        resp = feedback(api_key, rid, [2, 0, 1])
        assert resp.status_code == 200, resp.text[:300]
        assert resp.json()["correct"] == 0, resp.text
    # Bad feedback is refused, naming the problem.
    resp = feedback(api_key, "never-answered-" + run, [0])
    assert resp.status_code == 404 and "never-answered-" + run in resp.text, resp.text
    resp = feedback(api_key, ids[0], [0, 1])
    assert resp.status_code in (400, 409), resp.text
    wait_for("ModelopsAccuracyLow firing", lambda: firing(password, "ModelopsAccuracyLow", model="iris"))
    wait_for("ModelopsAccuracyLow at Alertmanager",
             lambda: [a for a in alertmanager_alerts(password, "ModelopsAccuracyLow") if a["status"]["state"] == "active"])


def test_stopped_replica_fires_not_ready_until_site_heals_it(password):
    host = next(iter(MODEL_HOSTS))
    targets = [r["metric"] for r in prom(password, 'up{job="model",host="%s"}' % host)]
    victim = sorted(targets, key=lambda m: m["replica"])[0]
    name = "model-%s-%s-%s" % (victim["model"], victim["slot"], victim["replica"])
    stopped = on_host(host, "docker", "stop", name)
    assert stopped.returncode == 0, stopped.stderr
    wait_for("ModelopsModelNotReady firing for %s" % name,
             lambda: firing(password, "ModelopsModelNotReady", host=host, replica=victim["replica"]))
    proc = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", INVENTORY,
                           os.path.join(ROOT, "playbooks", "site.yml"), "--limit", "%s,localhost" % host],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    wait_for("ModelopsModelNotReady resolved after site.yml",
             lambda: not firing(password, "ModelopsModelNotReady", host=host) and [True])


def test_every_dashboard_panel_returns_data(password):
    # Only the GPU panels may be empty here (the lab has no GPU), and the
    # regressors' absolute error (the lab's model is a classifier).
    optional = {name: why for name, why in panels.OPTIONAL_METRICS.items()
                if name.startswith("modelops_gpu_") or name == "modelops_feedback_abs_error_sum"}
    exprs = list(panels.panel_exprs())
    assert len(exprs) > 20
    problems = panels.check_prometheus(PROMETHEUS, exprs, optional=optional, ca_file=CA, username=USER,
                                       password=password)
    assert not problems, "panels that would show nothing:\n" + "\n".join(problems)
    print(json.dumps({"panel_queries_checked": len(exprs)}))
