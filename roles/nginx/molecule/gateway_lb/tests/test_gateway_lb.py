"""Verify the nginx role for real, each host acting as the other's client.

The gateway (GW, group debian12) is a model gateway in front of a real HTTP
service on 127.0.0.1:8601; the LB tier (LB, group debian13) is in front of GW.
Requests go over the molecule network only; every loop is bounded.
"""
import json
import re
import time

import pytest
from testinfra_fixtures import SCENARIO, group_host, name, playbook

# Inventory names: they resolve on the molecule network and depend on the lane.
GW, LB = name(group_host("debian12")), name(group_host("debian13"))
JOURNAL_UNITS = ("nginx",)
CA = "/etc/modelops/pki/ca.crt"
METRICS_USER = ("prom", "molecule-metrics-password")
CLIENT_CERT = ("--cert", "/root/verify-client.crt", "--key", "/root/verify-client.key")
KEYS = {
    "team-a": "molecule-team-a-key-0123456789abcdef",
    "team-b": "molecule-team-b-key-0123456789abcdef",
    "burst": "molecule-burst-key-0123456789abcdef0",
}


@pytest.fixture(scope="module")
def gw(d12):
    return d12


@pytest.fixture(scope="module")
def lb(d13):
    return d13


def curl(client, url, *args, key=None):
    """Run curl on `client`; return (status, headers dict, body text)."""
    cmd = ["curl", "-sS", "--max-time", "10", "--cacert", CA, "-D", "/dev/stderr", "-o", "/dev/stdout"]
    if key:
        cmd += ["-H", f"Authorization: Bearer {key}"]
    res = client.run(" ".join(map(_q, cmd + list(args) + [url])))
    assert res.rc == 0, res.stderr
    lines = [ln.strip() for ln in res.stderr.splitlines() if ln.strip()]
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            headers.setdefault(k.strip().lower(), []).append(v.strip())
    return status, headers, res.stdout


def _q(s):
    return "'" + str(s).replace("'", "'\\''") + "'"


def json_error(body):
    doc = json.loads(body)
    assert isinstance(doc.get("error"), str) and doc["error"]
    return doc


# ------------------------------------------------------------------ TLS
def test_certificate_chain_verifies_against_our_ca(lb):
    out = lb.run(f"openssl s_client -connect {GW}:443 -servername {GW} -CAfile {CA} "
                 f"-verify_return_error -verify_hostname {GW} </dev/null")
    assert out.rc == 0, out.stderr
    assert "Verify return code: 0 (ok)" in out.stdout
    # The same handshake against an unrelated CA must fail: verification is real.
    bad = lb.run(f"openssl s_client -connect {GW}:443 -servername {GW} -CAfile /root/rogue.crt "
                 f"-verify_return_error </dev/null")
    assert bad.rc != 0


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_old_tls_versions_are_refused_by_the_server(lb, flag):
    # SECLEVEL=0 lets the client offer the old version; the server must say no.
    out = lb.run(f"openssl s_client -connect {GW}:443 {flag} -cipher 'DEFAULT:@SECLEVEL=0' </dev/null")
    assert out.rc != 0
    assert "alert protocol version" in out.stderr + out.stdout


@pytest.mark.parametrize("flag,proto", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls12_and_tls13_are_accepted(lb, flag, proto):
    out = lb.run(f"openssl s_client -connect {GW}:443 -servername {GW} {flag} -CAfile {CA} </dev/null")
    assert out.rc == 0, out.stderr
    assert f"Protocol  : {proto}" in out.stdout or f"New, {proto}" in out.stdout


def test_protocol_scan_shows_only_tls12_and_tls13(lb):
    out = lb.check_output(f"nmap -Pn -n -p 443 --script ssl-enum-ciphers --host-timeout 60s {GW}")
    # (nmap does not enumerate TLS 1.3; the openssl test above covers it.)
    assert "TLSv1.2:" in out
    assert "TLSv1.0:" not in out and "TLSv1.1:" not in out
    assert "SSLv3" not in out
    # Forward secret AEAD suites only.
    assert "_CBC_" not in out and "RSA_WITH" not in out


def test_session_tickets_are_off(gw):
    conf = gw.file("/etc/nginx/modelops/gateway.conf").content_string
    assert "ssl_session_tickets off;" in conf
    assert "ssl_stapling" not in conf  # internal CA: no OCSP responder


# ------------------------------------------------------------------ API keys
def test_missing_key_gets_401_json(lb):
    status, headers, body = curl(lb, f"https://{GW}/v2/models/echo/ready")
    assert status == 401
    assert headers["www-authenticate"] == ['Bearer realm="modelops"']
    assert headers["content-type"] == ["application/json"]
    assert "missing" in json_error(body)["error"]


def test_wrong_key_gets_401_json(lb):
    status, headers, body = curl(lb, f"https://{GW}/v2/models/echo/ready", key="x" * 40)
    assert status == 401
    assert "www-authenticate" in headers
    assert "invalid" in json_error(body)["error"]


def test_key_case_matters(lb):
    status, _, _ = curl(lb, f"https://{GW}/v2/models/echo/ready", key=KEYS["team-a"].upper())
    assert status == 401


def test_valid_key_reaches_the_real_upstream(lb):
    status, headers, body = curl(lb, f"https://{GW}/v2/models/echo/infer", "-X", "POST",
                                 "-H", "Content-Type: application/json", "-d", '{"inputs":[]}', key=KEYS["team-a"])
    assert status == 200
    echo = json.loads(body)
    assert echo["port"] == 8601 and echo["method"] == "POST"
    assert echo["path"] == "/v2/models/echo/infer"
    assert echo["body_length"] == len('{"inputs":[]}')
    # The key stays at the gateway; the upstream learns the key's name only.
    assert "authorization" not in echo["headers"]
    assert echo["headers"]["x-modelops-client"] == "team-a"
    assert echo["headers"]["x-forwarded-proto"] == "https"
    assert headers["strict-transport-security"] == ["max-age=63072000"]


def test_request_id_is_generated_kept_and_returned_once(lb):
    status, headers, body = curl(lb, f"https://{GW}/v2/models/echo/ready", key=KEYS["team-a"])
    assert status == 200
    generated = headers["x-request-id"]
    assert len(generated) == 1 and len(generated[0]) == 32  # nginx's $request_id
    assert json.loads(body)["headers"]["x-request-id"] == generated[0]
    status, headers, body = curl(lb, f"https://{GW}/v2/models/echo/ready", "-H", "X-Request-ID: client-abc.42",
                                 key=KEYS["team-a"])
    assert headers["x-request-id"] == ["client-abc.42"]
    assert json.loads(body)["headers"]["x-request-id"] == "client-abc.42"
    # An unsafe client id is replaced, not passed on.
    status, headers, body = curl(lb, f"https://{GW}/v2/models/echo/ready", "-H", 'X-Request-ID: a"b',
                                 key=KEYS["team-a"])
    assert len(headers["x-request-id"][0]) == 32


@pytest.mark.parametrize("path,upstream_path", [
    ("/models/echo/v2/health/ready", "/v2/health/ready"),
    ("/models/echo/v2/models/echo", "/v2/models/echo"),
    ("/models/echo/predict", "/predict"),
    ("/v2/models/echo", "/v2/models/echo"),
    ("/v2/models/echo/versions/1/ready", "/v2/models/echo/versions/1/ready"),
])
def test_routes_map_to_the_replica(lb, path, upstream_path):
    status, _, body = curl(lb, f"https://{GW}{path}", key=KEYS["team-a"])
    assert status == 200
    assert json.loads(body)["path"] == upstream_path


def test_gateway_health_needs_no_key(lb):
    assert curl(lb, f"https://{GW}/v2/health/live")[2] == '{"live":true}'
    assert curl(lb, f"https://{GW}/v2/health/ready")[2] == '{"ready":true}'


@pytest.mark.parametrize("path", ["/", "/metrics", "/models/echo/metrics", "/v2/models/unknown/ready", "/v2/models/echoes"])
def test_unknown_routes_get_404_json(lb, path):
    status, _, body = curl(lb, f"https://{GW}{path}", key=KEYS["team-a"])
    assert status == 404
    json_error(body)


def test_per_model_key_list(lb):
    status, _, body = curl(lb, f"https://{GW}/v2/models/private/ready", key=KEYS["team-a"])
    assert status == 403
    assert "private" in json_error(body)["error"]
    assert curl(lb, f"https://{GW}/v2/models/private/ready", key=KEYS["team-b"])[0] == 200


def test_oversized_body_gets_413_json(lb):
    lb.check_output("head -c 1100000 /dev/zero > /tmp/big.bin")
    status, _, body = curl(lb, f"https://{GW}/v2/models/echo/infer", "--data-binary", "@/tmp/big.bin",
                           key=KEYS["team-a"])
    assert status == 413
    json_error(body)
    lb.check_output("head -c 900000 /dev/zero > /tmp/ok.bin")
    status, _, body = curl(lb, f"https://{GW}/v2/models/echo/infer", "--data-binary", "@/tmp/ok.bin",
                           key=KEYS["team-a"])
    assert status == 200 and json.loads(body)["body_length"] == 900000


def test_rate_limit_gives_429_json_per_key(lb):
    # 40 requests at once (multiplexed on one HTTP/2 connection) for one key:
    # 20 r/s with a burst of 20 lets about 21 through and refuses the rest.
    lb.check_output("sleep 2")  # let the bucket refill after earlier tests
    url = f"https://{GW}/v2/models/echo/ready"
    out = lb.check_output(
        f"curl -s --parallel --parallel-immediate --parallel-max 40 --max-time 20 -w '\\n%{{http_code}}\\n' "
        f"--cacert {CA} -H 'Authorization: Bearer {KEYS['burst']}' " + " ".join([url] * 40))
    codes = [ln for ln in out.splitlines() if ln in ("200", "429")]
    assert len(codes) == 40
    assert 15 <= codes.count("200") <= 32 and codes.count("429") >= 5, codes
    # Every refusal carries the JSON error body.
    assert out.count('{"error":"rate limit exceeded"') == codes.count("429")
    # Other keys are not affected.
    assert curl(lb, url, key=KEYS["team-b"])[0] == 200


def test_failed_replica_is_retried_on_the_other(lb):
    # 8602 has no listener; POSTs are retried there only because they were never sent.
    for _ in range(6):
        status, _, body = curl(lb, f"https://{GW}/v2/models/echo/infer", "-X", "POST", "-d", "{}",
                               key=KEYS["team-a"])
        assert status == 200 and json.loads(body)["port"] == 8601


def test_posts_the_replica_may_have_received_are_retried_too(gw, lb):
    # nginx_next_upstream_non_idempotent defaults to true (README "Upstreams"):
    # both tiers resend a POST even when the first replica may have received it.
    for host in (gw, lb):
        conf = host.file("/etc/nginx/modelops/gateway.conf").content_string
        assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in conf


# ------------------------------------------------------------------ mTLS
def test_client_certificate_signed_by_our_ca_is_accepted(lb):
    status, _, body = curl(lb, f"https://{GW}/v2/models/echo/ready",
                           "--cert", "/root/verify-client.crt", "--key", "/root/verify-client.key")
    assert status == 200
    assert json.loads(body)["headers"]["x-modelops-client"] == "cert:verify-client"


def test_client_certificate_from_another_ca_is_refused(lb):
    status, _, body = curl(lb, f"https://{GW}/v2/models/echo/ready", "--cert", "/root/rogue.crt",
                           "--key", "/root/rogue.key")
    assert status == 401
    assert "certificate" in json_error(body)["error"]


def test_no_certificate_and_no_key_is_refused(lb):
    assert curl(lb, f"https://{GW}/v2/models/echo/ready")[0] == 401


# ------------------------------------------------------------------ HTTP, status
def test_http_redirects_to_https_on_the_gateway(lb):
    out = lb.check_output(f"curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://{GW}/v2/health/live?x=1")
    assert out == f"301 https://{GW}/v2/health/live?x=1"


def test_http_is_closed_on_the_lb(gw):
    res = gw.run(f"curl -s --max-time 5 http://{LB}/")
    assert res.rc == 7  # connection refused: nothing listens on 80


def test_stub_status_from_a_monitoring_host(lb, gw):
    # debian13 is in nginx_monitoring_cidrs.
    out = lb.check_output(f"curl -s --max-time 5 http://{GW}:8081/stub_status")
    assert out.startswith("Active connections:")
    assert gw.check_output("curl -s --max-time 5 http://127.0.0.1:8081/stub_status").startswith("Active connections:")


def test_stub_status_from_elsewhere_is_403(gw):
    res = gw.check_output(f"curl -s --max-time 5 -w ' %{{http_code}}' http://{LB}:8081/stub_status")
    body, code = res.rsplit(" ", 1)
    assert code == "403"
    json_error(body)


# ------------------------------------------------------------------ monitoring server
@pytest.mark.parametrize("tier", ["gateway", "lb"])
def test_monitoring_server_needs_a_certificate_or_a_password(gw, lb, tier):
    # The monitoring host (debian13, also the LB tier) asks both tiers.
    client, url = lb, f"https://{GW if tier == 'gateway' else LB}:9180/nginx/metrics"
    status, headers, body = curl(client, url)
    assert status == 401 and "authentication" in json_error(body)["error"]
    assert headers["www-authenticate"] == ['Basic realm="modelops monitoring"']
    assert curl(client, url, "-u", "prom:not-the-password")[0] == 401
    assert curl(client, url, "-u", "nobody:molecule-metrics-password")[0] == 401
    assert curl(client, url, "--cert", "/root/rogue.crt", "--key", "/root/rogue.key")[0] == 401
    # An API key of the model routes is no credential here.
    assert curl(client, url, key=KEYS["team-a"])[0] == 401
    for creds in (("-u", ":".join(METRICS_USER)), CLIENT_CERT):
        status, _, body = curl(client, url, *creds)
        assert status == 200
        assert "\nnginx_connections_active " in body and "nginx_up 1" in body


def test_monitoring_server_refuses_other_networks_with_403_json(gw):
    status, _, body = curl(gw, f"https://{LB}:9180/nginx/metrics", "-u", ":".join(METRICS_USER))
    assert status == 403 and "monitoring network" in json_error(body)["error"]


def test_nginx_exporter_listens_on_loopback_only(gw, lb):
    for host in (gw, lb):
        sock = host.socket("tcp://127.0.0.1:9113")
        assert sock.is_listening
        assert not host.socket("tcp://0.0.0.0:9113").is_listening
    # Its port is not reachable from the other host.
    assert gw.run(f"curl -s --max-time 5 http://{LB}:9113/metrics").rc != 0


def test_monitoring_server_unknown_route_is_404_json(lb):
    status, _, body = curl(lb, f"https://{GW}:9180/v2/models/echo/ready", "-u", ":".join(METRICS_USER))
    assert status == 404 and "no such route" in json_error(body)["error"]


def test_sd_document_is_empty_without_labelled_replicas(lb):
    # echo's replicas are static (no labels) and the LB tier has no replicas.
    for url in (f"https://{GW}:9180/sd/echo.json", f"https://{LB}:9180/sd/echo.json",
                f"https://{GW}:9180/sd/nosuchmodel.json"):
        status, _, body = curl(lb, url, *CLIENT_CERT)
        assert status == 200 and json.loads(body) == []


# ------------------------------------------------------------------ LB tier
def test_lb_reencrypts_to_the_gateway_with_its_certificate(gw):
    status, headers, body = curl(gw, f"https://{LB}/v2/models/echo/infer", "-X", "POST", "-d", "{}",
                                 "-H", "X-Request-ID: through-the-lb-1", key=KEYS["team-a"])
    assert status == 200
    echo = json.loads(body)
    # LB -> GW over TLS, proven with the LB's host certificate (mTLS at GW).
    assert echo["headers"]["x-modelops-client"] == f"cert:{LB}"
    assert echo["headers"]["x-request-id"] == "through-the-lb-1"
    assert headers["x-request-id"] == ["through-the-lb-1"]
    assert headers["strict-transport-security"] == ["max-age=63072000"]
    # Paths pass unchanged at the LB tier; the gateway maps them.
    assert json.loads(curl(gw, f"https://{LB}/models/echo/predict", key=KEYS["team-a"])[2])["path"] == "/predict"
    assert curl(gw, f"https://{LB}/v2/models/echo/ready")[0] == 401


def test_lb_checks_the_gateway_certificate(lb):
    conf = lb.file("/etc/nginx/modelops/gateway.conf").content_string
    assert "proxy_ssl_verify on;" in conf
    assert "proxy_ssl_name gateways.modelops.test;" in conf


# ------------------------------------------------------------------ logs, secrets
def test_access_log_is_json_without_secrets(gw):
    gw.check_output("sleep 1")
    lines = gw.file("/var/log/nginx/modelops-access.log").content_string.splitlines()
    entries = [json.loads(line) for line in lines[-50:]]
    served = [e for e in entries if e["modelops.model"] == "echo" and e["http.response.status_code"] == 200]
    assert served
    for field in ("@timestamp", "http.request.id", "http.request.method", "url.path", "http.response.status_code",
                  "http.request.bytes", "http.response.body.bytes", "modelops.request_time", "client.ip",
                  "user_agent.original", "tls.version", "modelops.client", "modelops.model",
                  "modelops.upstream.address", "modelops.upstream.status", "modelops.upstream.response_time"):
        assert field in served[-1]
    assert served[-1]["modelops.upstream.address"].startswith("127.0.0.1:86")
    assert served[-1]["tls.version"] in ("1.2", "1.3")
    assert served[-1]["modelops.client"]  # a key name or cert:<CN>, never the key
    everything = gw.check_output("cat /var/log/nginx/*.log")
    for key in KEYS.values():
        assert key not in everything
    assert "Bearer" not in everything and "bearer" not in everything


def test_api_key_file_is_root_only(gw):
    f = gw.file("/etc/nginx/modelops/auth.conf")
    assert f.user == "root" and f.mode == 0o600


def test_nginx_workers_are_unprivileged(gw):
    users = gw.check_output("ps -o user= -C nginx").split()
    assert "root" in users and "www-data" in users


# ------------------------------------------------------------------ upstream entry point
def test_model_without_replica_answers_502_json(lb):
    status, _, body = curl(lb, f"https://{GW}/v2/models/pending/ready", key=KEYS["team-a"])
    assert status == 502
    assert "replica" in json_error(body)["error"]


def test_upstream_entry_point_switches_and_rejects_bad_config(gw, lb):
    echo_conf = gw.file("/etc/nginx/modelops/upstreams/echo.conf")
    before = echo_conf.md5sum
    master = gw.check_output("cat /run/nginx.pid")
    run = playbook("verify_upstream.yml")
    assert run.returncode == 0, run.stdout[-4000:]
    assert "REJECTED" in run.stdout and "invalid port" in run.stdout
    # The replica registered through the entry point serves at once.
    status, _, body = curl(lb, f"https://{GW}/v2/models/pending/ready", key=KEYS["team-a"])
    assert status == 200 and json.loads(body)["path"] == "/v2/models/pending/ready"
    # The rejected change left the file and the running nginx alone.
    assert gw.file("/etc/nginx/modelops/upstreams/echo.conf").md5sum == before
    assert "99999" not in gw.file("/etc/nginx/modelops/upstreams/echo.conf").content_string
    assert curl(lb, f"https://{GW}/v2/models/echo/ready", key=KEYS["team-a"])[0] == 200
    # Reloads are graceful: the master process is the same one.
    assert gw.check_output("cat /run/nginx.pid") == master


def test_labelled_replicas_are_scraped_through_the_monitoring_server(gw, lb):
    # verify_upstream.yml registered pending's replicas 8601 and 8603 (slot a)
    # with labels, and 8650 (slot b) drained: only the live ones are listed.
    status, _, body = curl(lb, f"https://{GW}:9180/sd/pending.json", "-u", ":".join(METRICS_USER))
    assert status == 200
    groups = json.loads(body)
    assert [g["targets"] for g in groups] == [[f"{GW}:9180"]] * 2
    assert [g["labels"] for g in groups] == [
        {"__metrics_path__": f"/models/pending/a/{i}/metrics", "model": "pending", "version": "3", "slot": "a",
         "replica": str(i), "host": GW} for i in (0, 1)]
    for i, port in ((0, 8601), (1, 8603)):
        status, _, body = curl(lb, f"https://{GW}:9180/models/pending/a/{i}/metrics", *CLIENT_CERT)
        assert status == 200
        echo = json.loads(body)
        assert echo["port"] == port and echo["path"] == "/metrics" and "authorization" not in echo["headers"]
    # The drained replica has no route.
    assert curl(lb, f"https://{GW}:9180/models/pending/b/0/metrics", *CLIENT_CERT)[0] == 404


def test_bad_labels_are_refused_by_name(gw):
    run = playbook("verify_upstream.yml")
    assert run.returncode == 0, run.stdout[-4000:]
    # The YAML result format wraps long messages and colours each line: compare
    # without the colour codes and with whitespace folded.
    out = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", run.stdout).split())
    assert "LABELS-REFUSED" in out and "labels need slot and replica" in out, run.stdout[-4000:]
    assert "8601" in gw.file("/etc/nginx/modelops/metrics/pending.conf").content_string


def _ports(client, url, *args, count=8):
    """The replica port of each of `count` requests sent on one kept-alive connection (one nginx worker)."""
    out = client.check_output(" ".join(map(_q, ["curl", "-s", "--max-time", "20", "--cacert", CA, *args,
                                                 "-H", f"Authorization: Bearer {KEYS['team-a']}",
                                                 "-w", "\n"] + [url] * count)))
    return [json.loads(line)["port"] for line in out.splitlines() if line.strip()]


def test_same_request_id_reaches_the_same_replica_through_both_tiers(gw, lb):
    # Client -> LB tier -> gateway -> one of pending's two replicas, and
    # monitoring host -> gateway directly: a request id always lands on one
    # replica, whichever nginx worker or connection carries it.
    seen = set()
    for client, url in ((gw, f"https://{LB}/v2/models/pending/infer"), (lb, f"https://{GW}/v2/models/pending/infer")):
        for rid in ("feedback-abc-1", "feedback-abc-2", "feedback-abc-3", "feedback-abc-4"):
            ports = set(_ports(client, url, "-X", "POST", "-d", "{}", "-H", f"X-Request-ID: {rid}", count=4))
            ports |= set(_ports(client, url, "-X", "POST", "-d", "{}", "-H", f"X-Request-ID: {rid}", count=1))
            assert len(ports) == 1, (rid, ports)
            seen |= ports
    assert seen <= {8601, 8603}
    # Without the header the gateway spreads requests round robin (on one
    # connection, one worker: they alternate).
    ports = _ports(lb, f"https://{GW}/v2/models/pending/infer", "-X", "POST", "-d", "{}", count=6)
    assert sorted(ports) == [8601] * 3 + [8603] * 3, ports
    for host in (gw, lb):
        assert "hash $http_x_request_id consistent;" in host.file("/etc/nginx/modelops/upstreams/pending.conf").content_string


def test_reloads_under_load_lose_no_kept_alive_request(gw, lb):
    """systemctl reload (the role's drop-in) while keep-alive clients call the LB: no request is lost."""
    assert "modelops-nginx-reload" in lb.check_output("systemctl show nginx -p ExecReload")
    script = (SCENARIO / "reload_client.py").read_text()
    gw.run("cat > /tmp/reload_client.py <<'PYEOF'\n" + script + "PYEOF")
    gw.run(f"rm -f /tmp/reload_client.json; nohup python3 /tmp/reload_client.py {LB} {KEYS['team-a']} 25 "
           "> /tmp/reload_client.json 2>&1 &")
    master = lb.check_output("cat /run/nginx.pid")
    time.sleep(3)
    for _ in range(5):
        res = lb.run("systemctl reload nginx")
        assert res.rc == 0, res.stderr
        time.sleep(1)
    deadline = time.monotonic() + 60
    while gw.run("pgrep -f '[r]eload_client.py'").rc == 0 and time.monotonic() < deadline:
        time.sleep(1)
    summary = json.loads(gw.check_output("cat /tmp/reload_client.json"))
    print("reload under load:", summary)
    assert summary["errors"] == [], summary
    assert summary["requests"] >= 200 and summary["ok"] == summary["requests"], summary
    # The close window really ran (clients were sent to fresh connections) ...
    assert summary["closed_by_server"] > 0, summary
    # ... and is over: the flag is gone and answers keep their connections again.
    assert not lb.file("/run/modelops-nginx-closing").exists
    _, headers, _ = curl(gw, f"https://{LB}/v2/models/echo/ready", key=KEYS["team-a"])
    assert "close" not in headers.get("connection", [""])[0].lower()
    assert lb.check_output("cat /run/nginx.pid") == master


def test_drain_entry_point_turns_readiness_off_without_a_reload(gw, lb):
    def drain(state):
        run = playbook("verify_drain.yml", "-e", f"drained={state}")
        assert run.returncode == 0, run.stdout[-4000:]

    workers = gw.check_output("pgrep -d, -P $(cat /run/nginx.pid)")
    try:
        drain("true")
        status, _, body = curl(lb, f"https://{GW}/v2/health/ready")
        assert status == 503 and json.loads(body) == {"ready": False, "reason": "drained for maintenance"}
        # model routes still answer what arrives; nothing was reloaded
        assert curl(lb, f"https://{GW}/v2/models/echo/ready", key=KEYS["team-a"])[0] == 200
        assert gw.check_output("pgrep -d, -P $(cat /run/nginx.pid)") == workers
    finally:
        drain("false")
    status, _, body = curl(lb, f"https://{GW}/v2/health/ready")
    assert status == 200 and json.loads(body) == {"ready": True}
    assert not gw.file("/var/lib/modelops-nginx-drained").exists
