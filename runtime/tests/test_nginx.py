"""Behind a real NGINX (upstream keep-alive), and a rolling restart without failed requests.

Skipped when the nginx binary is not installed (Debian: nginx-light).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
from conftest import start_server, wait_for

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")

BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [6.7, 3.0, 5.2, 2.3]}]})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def proxy(tmp_path):
    procs = []

    def start(upstream_ports):
        port = _free_port()
        d = tmp_path / "nginx"
        d.mkdir(exist_ok=True)
        servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=0;" for p in upstream_ports)
        (d / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream models {{
{servers}
    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://models;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream error timeout non_idempotent;
    }}
  }}
}}
""")
        proc = subprocess.Popen([NGINX, "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        procs.append(proc)

        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(up, 20, "nginx listening")
        return port

    yield start
    for p in procs:
        p.send_signal(signal.SIGQUIT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def test_keepalive_through_nginx(tmp_path, onnx_model_dir, proxy):
    srv = start_server(onnx_model_dir, tmp_path)
    try:
        port = proxy([srv.port])
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for i in range(200):
                c.request("POST", "/v2/models/iris/infer", body=BODY, headers={"X-Request-ID": f"n{i}"})
                r = c.getresponse()
                data = r.read()
                assert r.status == 200, data
                assert json.loads(data)["outputs"][0]["data"] == [2]
                assert r.getheader("X-Model-Name") == "iris" and r.getheader("X-Request-ID") == f"n{i}"
        finally:
            c.close()
        from conftest import metric

        text = srv.metrics_text()
        assert metric(text, "modelops_requests_total", endpoint="infer", code="200") == 200
    finally:
        assert srv.stop() == 0


def test_rolling_restart_behind_nginx_loses_no_request(tmp_path, onnx_model_dir, proxy):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_server(onnx_model_dir, tmp_path / "a")
    b = start_server(onnx_model_dir, tmp_path / "b")
    port = proxy([a.port, b.port])
    stats = {"ok": 0, "failed": [], "done": False}

    def load():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        deadline = time.monotonic() + 30
        try:
            for _ in range(20000):  # bounded in count and time
                if stats["done"] or time.monotonic() > deadline:
                    break
                try:
                    c.request("POST", "/v2/models/iris/infer", body=BODY)
                    r = c.getresponse()
                    data = r.read()
                    if r.status == 200:
                        stats["ok"] += 1
                    else:
                        stats["failed"].append((r.status, data[:200]))
                except (OSError, http.client.HTTPException) as exc:
                    stats["failed"].append(repr(exc))
                    c.close()
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        finally:
            c.close()

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: stats["ok"] >= 200, 30, "traffic flowing")
        a.proc.send_signal(signal.SIGTERM)  # instance A goes away (as in a rolling update)
        assert a.proc.wait(30) == 0
        seen = stats["ok"]
        wait_for(lambda: stats["ok"] >= seen + 300, 30, "traffic on B after A left")
    finally:
        stats["done"] = True
        for t in threads:
            t.join(30)
        b.stop()
        a.stop()
    assert stats["failed"] == []
    assert stats["ok"] >= 500
