"""Verify the prometheus role: each host's Prometheus serves its UI over HTTPS
with basic auth, scrapes both node exporters (HTTPS, client certificate, basic
auth) and itself, has the nginx, model (discovery) and alertmanager jobs with
host labels, loaded the rules (each with a promtool unit test), fires alerts,
and kept its configuration when promtool refused a broken rule."""
import json
import os
import time

import yaml

BASE = "https://localhost:9090"
API = f"{BASE}/api/v1"
CA = "/etc/modelops/pki/ca.crt"
AUTH = "prometheus:molecule-scrape-pw"
RULES = "/etc/prometheus/modelops-rules/modelops.yml"
RULES_TEST = os.path.join(os.path.dirname(__file__), "..", "files", "rules_test.yml")
CONTRACT_ALERTS = {
    "ModelopsHostDown", "ModelopsTargetDown", "ModelopsFilesystemAlmostFull", "ModelopsModelNotReady",
    "ModelopsReplicaRestarting", "ModelopsModelErrorRateHigh", "ModelopsModelLatencyAboveSlo", "ModelopsFeatureDrift",
    "ModelopsAccuracyLow", "ModelopsCertificateExpiring", "ModelopsGpuTemperatureHigh", "ModelopsGpuEccErrors",
    "ModelopsGpuXidErrors", "ModelopsGpuLost", "ModelopsGpuMetricsMissing",
}


def status(host, url, *curl_args):
    """HTTP status of a GET to the UI with the given curl options."""
    return host.check_output(f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 --cacert {CA} {' '.join(curl_args)} '{url}'")


def api(host, path):
    out = host.check_output(f"curl -sS --max-time 10 --cacert {CA} -u {AUTH} '{API}/{path}'")
    body = json.loads(out)
    assert body["status"] == "success", body
    return body["data"]


def wait_for(host, path, predicate, timeout=90):
    """Poll the API until predicate(data) holds, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        data = api(host, path)
        if predicate(data) or time.monotonic() > deadline:
            return data
        time.sleep(3)


def node_targets(data):
    return [t for t in data["activeTargets"] if t["labels"]["job"] == "node"]


def test_service_enabled_and_running(host):
    svc = host.service("prometheus")
    assert svc.is_enabled
    assert svc.is_running


def test_both_node_exporters_are_up(host):
    """Each Prometheus scrapes its own and the other host's exporter over mTLS + basic auth."""
    data = wait_for(host, "targets?state=active",
                    lambda d: len(node_targets(d)) == 2 and all(t["health"] == "up" for t in node_targets(d)))
    targets = node_targets(data)
    assert len({t["labels"]["instance"] for t in targets}) == 2
    for t in targets:
        assert t["health"] == "up", t
        assert t["scrapeUrl"].startswith("https://"), t
    other = [t for t in targets if t["labels"]["instance"] != host.backend.host]
    assert len(other) == 1 and other[0]["health"] == "up"


def test_real_node_metrics_from_the_other_host(host):
    me = host.backend.host
    data = wait_for(host, "query?query=node_load1", lambda d: len(d["result"]) == 2)
    instances = {r["metric"]["instance"] for r in data["result"]}
    assert me in instances and len(instances) == 2


def test_ui_needs_https_and_the_password(host):
    assert status(host, f"{BASE}/-/ready") == "401"
    assert status(host, f"{BASE}/-/ready", "-u prometheus:wrong") == "401"
    assert status(host, f"{API}/query?query=up", "-u nobody:molecule-scrape-pw") == "401"
    assert status(host, f"{BASE}/-/ready", f"-u {AUTH}") == "200"
    # A client certificate from the CA is accepted along with the password.
    cert = "--cert /etc/modelops/pki/clients/prometheus.crt --key /etc/modelops/pki/clients/prometheus.key"
    assert status(host, f"{BASE}/-/ready", cert, f"-u {AUTH}") == "200"
    # Plain HTTP is not served.
    plain = host.run(f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 -u {AUTH} http://127.0.0.1:9090/-/ready")
    assert plain.stdout.strip() != "200", plain.stdout


def test_web_config_passes_promtool(host):
    out = host.run("promtool check web-config /etc/prometheus/web.yml")
    assert out.rc == 0, out.stdout + out.stderr
    web = host.file("/etc/prometheus/web.yml")
    assert web.mode == 0o640 and web.group == "prometheus"
    assert "molecule-scrape-pw" not in web.content_string
    assert "--web.config.file=/etc/prometheus/web.yml" in host.file("/etc/default/prometheus").content_string


def test_self_scrape_over_https_with_password(host):
    data = wait_for(host, "targets?state=active",
                    lambda d: any(t["labels"]["job"] == "prometheus" and t["health"] == "up" for t in d["activeTargets"]))
    me = [t for t in data["activeTargets"] if t["labels"]["job"] == "prometheus"]
    assert len(me) == 1 and me[0]["health"] == "up", me
    assert me[0]["scrapeUrl"].startswith("https://")
    assert me[0]["labels"]["host"] == host.backend.host


def test_every_node_and_nginx_target_has_its_host_label(host):
    data = api(host, "targets?state=active")
    for job in ("node", "nginx"):
        targets = [t for t in data["activeTargets"] if t["labels"]["job"] == job]
        assert len(targets) == 2, (job, targets)
        for t in targets:
            assert t["labels"]["host"] == t["labels"]["instance"]
    nginx = [t for t in data["activeTargets"] if t["labels"]["job"] == "nginx"]
    assert all(t["scrapeUrl"].startswith("https://") and t["scrapeUrl"].endswith(":9180/nginx/metrics") for t in nginx)


def test_model_discovery_and_alertmanager_jobs(host):
    cfg = yaml.safe_load(api(host, "status/config")["yaml"])
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    sd = jobs["model-sd"]
    urls = sorted(c["url"] for c in sd["http_sd_configs"])
    assert len(urls) == 2 and all(u.startswith("https://") and u.endswith(":9180/sd/iris.json") for u in urls)
    assert sd["http_sd_configs"][0]["basic_auth"]["password_file"] == "/etc/prometheus/secrets/gateway.password"
    assert sd["basic_auth"]["username"] == "prometheus"
    assert jobs["alertmanager"]["scheme"] == "https"
    am = cfg["alerting"]["alertmanagers"][0]
    assert am["scheme"] == "https" and am["tls_config"]["ca_file"] == "/etc/prometheus/secrets/alertmanager-ca.crt"
    assert "molecule-gateway-pw" not in api(host, "status/config")["yaml"]


def test_model_target_with_labels(host):
    data = api(host, "targets?state=active")
    model = [t for t in data["activeTargets"] if t["labels"]["job"] == "model"]
    assert len(model) == 1
    assert model[0]["labels"]["model"] == "iris"
    assert model[0]["labels"]["host"] == host.backend.host
    assert model[0]["scrapeUrl"] == "http://127.0.0.1:18080/metrics"


def test_rules_loaded(host):
    data = api(host, "rules")
    groups = {g["name"]: g for g in data["groups"]}
    assert set(groups) == {"modelops", "site"}
    names = {r["name"] for r in groups["modelops"]["rules"]}
    assert names == CONTRACT_ALERTS
    assert all(r["health"] == "ok" for g in data["groups"] for r in g["rules"])


def test_down_model_replica_fires_not_ready(host):
    def firing(d, name):
        return [a for a in d["alerts"] if a["labels"]["alertname"] == name and a["state"] == "firing"]
    data = wait_for(host, "alerts", lambda d: bool(firing(d, "ModelopsModelNotReady")))
    alert = firing(data, "ModelopsModelNotReady")[0]
    me = host.backend.host
    assert alert["annotations"]["summary"] == f"Replica blue/0 of iris 1 on {me} is not ready"
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["host"] == me
    # A down replica is ModelopsModelNotReady's, not ModelopsTargetDown's; a down NGINX is the latter's.
    down = firing(wait_for(host, "alerts", lambda d: bool(firing(d, "ModelopsTargetDown"))), "ModelopsTargetDown")
    assert down and all(a["labels"]["job"] in ("nginx", "alertmanager") for a in down), down
    site = [a for a in data["alerts"] if a["labels"]["alertname"] == "MoleculeAlwaysFiring"]
    assert site and site[0]["annotations"]["summary"] == "1 is always one"


def test_retention_and_listen_flags(host):
    flags = api(host, "status/flags")
    assert flags["storage.tsdb.retention.time"] == "10d"
    assert flags["storage.tsdb.retention.size"] in ("1GB", "1GiB")  # shown in binary units
    assert flags["web.listen-address"] == ":9090"
    cfg = api(host, "status/config")["yaml"]
    assert "password_file: /etc/prometheus/secrets/node-exporter.password" in cfg
    assert "molecule-scrape-pw" not in cfg
    assert "site: molecule" in cfg  # external labels


def test_broken_rule_was_not_installed(host):
    rules = host.file("/etc/prometheus/modelops-rules/modelops.yml").content_string
    assert "MoleculeBrokenRule" not in rules
    assert "MoleculeAlwaysFiring" in rules
    data = api(host, "query?query=prometheus_config_last_reload_successful")
    assert data["result"][0]["value"][1] == "1"


def test_secrets_are_private(host):
    pw = host.file("/etc/prometheus/secrets/node-exporter.password")
    assert pw.mode == 0o640 and pw.user == "root" and pw.group == "prometheus"
    assert pw.content_string == "molecule-scrape-pw"
    key = host.file("/etc/prometheus/secrets/node-exporter-client.key")
    assert key.mode == 0o640 and key.group == "prometheus"
    assert host.file("/etc/modelops/pki/clients/prometheus.key").mode == 0o600


def test_alert_rules_unit_tests(host):
    out = host.run("promtool test rules /var/tmp/modelops-rules-test.yml")
    assert out.rc == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_every_rendered_alert_has_a_firing_and_a_quiet_unit_test(host):
    """Each alert of the rules the role rendered is evaluated by rules_test.yml
    at least once where it fires and once where it does not."""
    rules = yaml.safe_load(host.file(RULES).content_string)
    alerts = {r["alert"] for g in rules["groups"] if g["name"] == "modelops" for r in g["rules"]}
    assert alerts == CONTRACT_ALERTS
    with open(RULES_TEST, encoding="utf-8") as f:
        cases = [c for t in yaml.safe_load(f)["tests"] for c in t.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert not alerts - fires, f"alerts without a firing test: {sorted(alerts - fires)}"
    assert not alerts - quiet, f"alerts without a test where they stay quiet: {sorted(alerts - quiet)}"
