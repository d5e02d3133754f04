"""Verify the prometheus role: each host's Prometheus scrapes both node exporters
(HTTPS, client certificate, basic auth), loaded the rules, fires alerts, and
kept its configuration when promtool refused a broken rule."""
import json
import time

API = "http://127.0.0.1:9090/api/v1"


def api(host, path):
    out = host.check_output(f"curl -sS --max-time 10 '{API}/{path}'")
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


def test_model_target_with_labels(host):
    data = api(host, "targets?state=active")
    model = [t for t in data["activeTargets"] if t["labels"]["job"] == "model"]
    assert len(model) == 1
    assert model[0]["labels"]["model"] == "iris"
    assert model[0]["scrapeUrl"] == "http://127.0.0.1:18080/metrics"


def test_rules_loaded(host):
    data = api(host, "rules")
    groups = {g["name"]: g for g in data["groups"]}
    assert set(groups) == {"modelops", "site"}
    names = {r["name"] for r in groups["modelops"]["rules"]}
    assert names == {"ModelopsTargetDown", "ModelopsModelLatencyHigh", "ModelopsModelErrorRateHigh",
                     "ModelopsFeatureDrift", "ModelopsGpuMetricsMissing", "ModelopsGpuLost", "ModelopsGpuTemperatureHigh",
                     "ModelopsFilesystemAlmostFull"}
    assert all(r["health"] == "ok" for g in data["groups"] for r in g["rules"])


def test_down_model_target_fires_an_alert(host):
    def firing(d):
        return [a for a in d["alerts"] if a["labels"]["alertname"] == "ModelopsTargetDown"
                and a["labels"].get("job") == "model" and a["state"] == "firing"]
    data = wait_for(host, "alerts", lambda d: bool(firing(d)))
    alert = firing(data)[0]
    assert alert["annotations"]["summary"] == "model target 127.0.0.1:18080 is down"
    assert alert["labels"]["severity"] == "critical"
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
