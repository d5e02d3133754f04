"""Verify the node_exporter role on real systemd hosts.

Debian 12 runs the defaults (plain HTTP on :9100). Debian 13 serves HTTPS on
:9443, asks for a client certificate signed by the test CA and for basic auth
(see molecule.yml and prepare.yml).
"""
import pytest

# Test-only credentials; molecule.yml holds the bcrypt hash of this password.
USER = "scraper"
PASSWORD = "molecule-scrape-pw"
PKI = "/etc/modelops/pki"
CLIENT = f"--cacert {PKI}/ca.crt --cert {PKI}/clients/client.crt --key {PKI}/clients/client.key"


def is_tls(host):
    return host.ansible.get_variables().get("node_exporter_tls_cert_file", "") != ""


def fetch(host, path="/metrics", auth=True, client_cert=True):
    """Return (HTTP status, body) from the exporter, over TLS where configured."""
    if is_tls(host):
        opts = CLIENT if client_cert else f"--cacert {PKI}/ca.crt"
        if auth:
            opts += f" -u {USER}:{PASSWORD}"
        url = f"https://localhost:9443{path}"
    else:
        opts, url = "", f"http://127.0.0.1:9100{path}"
    cmd = host.run(f"curl -sS --max-time 10 -o /tmp/ne-body -w '%{{http_code}}' {opts} {url}")
    body = host.file("/tmp/ne-body").content_string if host.file("/tmp/ne-body").exists else ""
    host.run("rm -f /tmp/ne-body")
    return cmd.stdout.strip(), body


def test_service_enabled_and_running(host):
    svc = host.service("prometheus-node-exporter")
    assert svc.is_enabled
    assert svc.is_running


def test_real_node_metrics(host):
    status, body = fetch(host)
    assert status == "200"
    for metric in ("node_load1 ", "node_cpu_seconds_total{", "node_memory_MemTotal_bytes ",
                   "node_filesystem_avail_bytes{", "node_network_receive_bytes_total{"):
        assert metric in body, metric
    # Collector switches from molecule.yml: systemd on, wifi off.
    assert 'node_scrape_collector_success{collector="systemd"} 1' in body
    assert 'collector="wifi"' not in body


def test_textfile_collector_exports_prom_files(host):
    host.run_expect([0], "printf '# TYPE molecule_textfile_probe gauge\\nmolecule_textfile_probe 42\\n' "
                         "> /var/lib/prometheus/node-exporter/molecule.prom")
    try:
        body = fetch(host)[1]
    finally:
        host.run("rm -f /var/lib/prometheus/node-exporter/molecule.prom")
    assert "molecule_textfile_probe 42" in body


def test_flags_file(host):
    args = host.file("/etc/default/prometheus-node-exporter").content_string
    assert "--collector.textfile.directory=/var/lib/prometheus/node-exporter" in args
    assert "--collector.systemd" in args
    assert "--no-collector.wifi" in args


def test_plain_http_has_no_web_config(host):
    if is_tls(host):
        pytest.skip("TLS host")
    assert not host.file("/etc/prometheus/node-exporter-web.yml").exists
    assert not host.file("/etc/prometheus/node-exporter-tls").exists


def test_tls_web_config_is_private(host):
    if not is_tls(host):
        pytest.skip("plain HTTP host")
    cfg = host.file("/etc/prometheus/node-exporter-web.yml")
    assert cfg.mode == 0o640 and cfg.user == "root" and cfg.group == "prometheus"
    key = host.file("/etc/prometheus/node-exporter-tls/server.key")
    assert key.mode == 0o640 and key.group == "prometheus"
    # The original key stays root-only.
    assert host.file(f"{PKI}/private/server.key").mode == 0o600


def test_tls_refuses_plain_http(host):
    if not is_tls(host):
        pytest.skip("plain HTTP host")
    out = host.run("curl -sS --max-time 10 -o /dev/null -w '%{http_code}' http://127.0.0.1:9443/metrics")
    assert out.stdout.strip() == "400"


def test_tls_requires_client_certificate(host):
    if not is_tls(host):
        pytest.skip("plain HTTP host")
    status = fetch(host, client_cert=False)[0]
    assert status == "000"  # the handshake fails


def test_tls_requires_basic_auth(host):
    if not is_tls(host):
        pytest.skip("plain HTTP host")
    status = fetch(host, auth=False)[0]
    assert status == "401"
    out = host.run(f"curl -sS --max-time 10 -o /dev/null -w '%{{http_code}}' {CLIENT} "
                   f"-u {USER}:wrong https://localhost:9443/metrics")
    assert out.stdout.strip() == "401"


def test_tls_serves_tls12_or_later_only(host):
    if not is_tls(host):
        pytest.skip("plain HTTP host")
    out = host.run(f"curl -sS --max-time 10 -o /dev/null {CLIENT} -u {USER}:{PASSWORD} "
                   "--tlsv1.1 --tls-max 1.1 https://localhost:9443/metrics")
    assert out.rc != 0
