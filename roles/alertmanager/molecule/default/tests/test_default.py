"""Verify the alertmanager role: two Alertmanagers in one gossip cluster over
HTTPS with basic auth; silences gossip; an alert sent to both is delivered
once to the webhook sink (with its bearer token); inhibited and discarded
alerts are not delivered; secrets stay out of the configuration."""
import json
import time
import uuid

import pytest
from testinfra_fixtures import ip_of, name

JOURNAL_UNITS = ("prometheus-alertmanager", "molecule-webhook-sink")
AUTH = "-u molecule:molecule-scrape-pw"
CA = "--cacert /etc/modelops/pki/ca.crt"
SINK = "/var/tmp/webhook.jsonl"


def url(host, path):
    return f"https://{name(host)}:9093{path}"


def curl(host, path, opts=AUTH, method="GET", data=None):
    """Status code and body of a request from the host to its own Alertmanager."""
    cmd = f"curl -sS --max-time 10 {CA} {opts} -X {method} -o /tmp/am.body -w '%{{http_code}}'"
    if data is not None:
        cmd += f" -H 'Content-Type: application/json' --data '{json.dumps(data)}'"
    code = host.check_output(f"{cmd} '{url(host, path)}'")
    return int(code), host.file("/tmp/am.body").content_string


def api(host, path, method="GET", data=None):
    code, body = curl(host, path, method=method, data=data)
    assert code == 200, (code, body)
    return json.loads(body) if body else None


def wait_for(fn, timeout=60, step=2):
    """Call fn until it returns something truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(step)


def delivered(d12):
    """Every notification the sink received: (authorization, alert labels) per alert."""
    out = []
    for line in d12.file(SINK).content_string.splitlines() if d12.file(SINK).exists else []:
        rec = json.loads(line)
        out += [(rec["authorization"], a["labels"]) for a in rec["body"].get("alerts", [])]
    return out


def alert(**labels):
    return {"labels": labels, "annotations": {"summary": "molecule"}}


@pytest.fixture(scope="module")
def run_id():
    return uuid.uuid4().hex[:8]


def test_service_enabled_and_running(d12, d13):
    for host in (d12, d13):
        svc = host.service("prometheus-alertmanager")
        assert svc.is_enabled and svc.is_running


def test_cluster_has_both_peers(d12, d13):
    for host, other in ((d12, d13), (d13, d12)):
        status = wait_for(lambda h=host: (s := api(h, "/api/v2/status"))["cluster"]["status"] == "ready"
                          and len(s["cluster"]["peers"]) == 2 and s)
        assert status, api(host, "/api/v2/status")["cluster"]
        addresses = {p["address"].rsplit(":", 1)[0] for p in status["cluster"]["peers"]}
        assert ip_of(other) in addresses and ip_of(host) in addresses


def test_api_needs_tls_and_a_password(d12):
    assert curl(d12, "/api/v2/status", opts="")[0] == 401
    assert curl(d12, "/api/v2/status", opts="-u molecule:wrong")[0] == 401
    plain = d12.run(f"curl -sS --max-time 5 -o /dev/null -w '%{{http_code}}' http://{name(d12)}:9093/-/ready")
    assert plain.stdout.strip() in ("400", "000"), plain.stdout
    # TLS 1.1 is below alertmanager_tls_min_version (TLS12).
    old_tls = d12.run(f"curl -sS --max-time 5 {CA} {AUTH} --tlsv1.1 --tls-max 1.1 {url(d12, '/-/ready')}")
    assert old_tls.rc != 0, old_tls.stdout


def test_a_silence_made_on_one_host_appears_on_the_other(d12, d13, run_id):
    now = time.time()
    silence = {"matchers": [{"name": "alertname", "value": f"MoleculeSilenced{run_id}", "isRegex": False}],
               "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
               "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
               "createdBy": "molecule", "comment": "gossip test"}
    sid = api(d12, "/api/v2/silences", method="POST", data=silence)["silenceID"]
    seen = wait_for(lambda: [s for s in api(d13, "/api/v2/silences") if s["id"] == sid and s["status"]["state"] == "active"],
                    timeout=30)
    assert seen, "the silence did not reach the other Alertmanager"
    api(d13, f"/api/v2/silence/{sid}", method="DELETE")


def test_an_alert_sent_to_both_is_delivered_once_with_the_token(d12, d13, run_id):
    """Prometheus sends every alert to every Alertmanager; the cluster notifies once."""
    name_ = f"MoleculeDelivered{run_id}"
    for host in (d12, d13):
        api(host, "/api/v2/alerts", method="POST", data=[alert(alertname=name_, host="molecule-a", severity="warning")])
    got = wait_for(lambda: [d for d in delivered(d12) if d[1]["alertname"] == name_], timeout=40)
    assert got, "the webhook sink received nothing"
    # Longer than the second peer's wait (--cluster.peer-timeout=3s) and a group interval.
    time.sleep(8)
    got = [d for d in delivered(d12) if d[1]["alertname"] == name_]
    assert len(got) == 1, got
    assert got[0][0] == "Bearer molecule-webhook-token"


def test_inhibited_and_discarded_alerts_are_not_delivered(d12, run_id):
    down, ready = "ModelopsHostDown", f"ModelopsModelNotReady{run_id}"
    api(d12, "/api/v2/alerts", method="POST", data=[
        alert(alertname=down, host=f"down-{run_id}", severity="critical"),
        alert(alertname=ready, host=f"down-{run_id}", model="iris", severity="critical"),
        alert(alertname=ready, host=f"up-{run_id}", model="iris", severity="critical"),
        alert(alertname=ready, host=f"twice-{run_id}", model="iris", severity="warning"),
        alert(alertname=ready, host=f"twice-{run_id}", model="iris", severity="critical"),
        alert(alertname=f"MoleculeDiscarded{run_id}", host=f"up-{run_id}", severity="none"),
    ])

    def labels_delivered():
        return [d[1] for d in delivered(d12)]
    assert wait_for(lambda: {(l_["alertname"], l_["host"], l_["severity"]) for l_ in labels_delivered()} >= {
        (down, f"down-{run_id}", "critical"), (ready, f"up-{run_id}", "critical"), (ready, f"twice-{run_id}", "critical")},
        timeout=40), labels_delivered()
    time.sleep(5)
    got = {(l_["alertname"], l_["host"], l_["severity"]) for l_ in labels_delivered()}
    assert (ready, f"down-{run_id}", "critical") not in got, "an alert of a down host was delivered"
    assert (ready, f"twice-{run_id}", "warning") not in got, "the warning of a critical alert was delivered"
    assert not [g for g in got if g[0] == f"MoleculeDiscarded{run_id}"]
    inhibited = {(a["labels"]["host"], a["labels"]["severity"])
                 for a in api(d12, f"/api/v2/alerts?inhibited=true&filter=alertname%3D%22{ready}%22")
                 if a["status"]["inhibitedBy"]}
    assert inhibited == {(f"down-{run_id}", "critical"), (f"twice-{run_id}", "warning")}


def test_secrets_stay_out_of_the_configuration(d12):
    config = d12.file("/etc/prometheus/alertmanager.yml")
    assert config.mode == 0o640 and config.group == "prometheus"
    assert "molecule-webhook-token" not in config.content_string
    token = d12.file("/etc/prometheus/alertmanager-secrets/webhook-sink.token")
    assert token.mode == 0o640 and token.user == "root" and token.group == "prometheus"
    assert "molecule-webhook-token" not in api(d12, "/api/v2/status")["config"]["original"]
    assert "molecule-scrape-pw" not in d12.file("/etc/prometheus/alertmanager-web.yml").content_string


def test_running_configuration_is_the_good_one(d12, d13):
    """The refused route (converge.yml) left the loaded configuration and its templates alone."""
    for host in (d12, d13):
        original = api(host, "/api/v2/status")["config"]["original"]
        assert "molecule-missing-receiver" not in original
        assert "alertmanager-templates/*.tmpl" in original
        code, metrics = curl(host, "/metrics")
        assert "alertmanager_config_last_reload_successful 1" in metrics
        args = host.file("/etc/default/prometheus-alertmanager").content_string
        assert "--cluster.peer=" in args and "--web.config.file=" in args
