"""Process lifecycle: checksum refusal, SIGTERM drain, workers, restarts, non-root."""

from __future__ import annotations

import http.client
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import RUNTIME_DIR, make_model_dir, metric, start_server, wait_for

ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


class _Evil:
    """Unpickling this creates a directory: proof that a file was deserialised."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_tampered_pickle_is_never_loaded(tmp_path, iris, iris_lr):
    X, _ = iris
    out, m = make_model_dir(tmp_path, iris_lr, X, convert_to_onnx=False)
    marker = tmp_path / "PWNED"
    (out / "original" / "model.joblib").write_bytes(pickle.dumps(_Evil(str(marker))))
    srv = start_server(out, tmp_path, wait_ready=False)
    try:
        def failed():
            try:
                status, _, body = srv.request("GET", "/v2/health/ready")
            except OSError:
                return False
            return status == 503 and json.loads(body).get("state") == "failed"

        wait_for(failed, 30, "not-ready state", srv)
        status, _, body = srv.request("GET", "/v2/health/ready")
        reason = json.loads(body)["reason"]
        assert "checksum mismatch for original/model.joblib" in reason and "refusing to load" in reason
        assert srv.request("GET", "/v2/health/live")[0] == 200
        status, _, body = srv.request("POST", "/v2/models/iris/infer", json.dumps(ROW))
        assert status == 503 and "not ready" in json.loads(body)["error"]
        assert srv.request("GET", "/v2/models/iris/ready")[0] == 503
        env = dict(os.environ, PYTHONPATH=str(RUNTIME_DIR))
        probe = [sys.executable, "-m", "modelops_runtime", "health", "--port", str(srv.port)]
        ready = subprocess.run(probe, capture_output=True, text=True, env=env, timeout=30)
        assert ready.returncode == 1 and "checksum mismatch" in ready.stdout
        assert subprocess.run(probe + ["--live"], capture_output=True, env=env, timeout=30).returncode == 0
        assert any(r.get("event.action") == "model_load_failed" for r in srv.logs())
        assert not marker.exists()
    finally:
        srv.stop()
    assert not marker.exists()


def test_exit_on_load_failure(tmp_path, iris, iris_lr):
    X, _ = iris
    out, _ = make_model_dir(tmp_path, iris_lr, X)
    with open(out / "converted" / "model.onnx", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x00\x00")
    env = dict(os.environ, PYTHONPATH=str(RUNTIME_DIR), MODELOPS_EXIT_ON_LOAD_FAILURE="1")
    res = subprocess.run([sys.executable, "-m", "modelops_runtime", "serve", "--model-dir", str(out), "--host", "127.0.0.1",
                          "--port", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 3
    assert "checksum mismatch for converted/model.onnx" in res.stdout


def test_missing_manifest_exits_2(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(RUNTIME_DIR))
    res = subprocess.run([sys.executable, "-m", "modelops_runtime", "serve", "--model-dir", str(tmp_path), "--port", "0"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "manifest.json not found" in res.stdout


def _connect_refused(port) -> bool:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except ConnectionRefusedError:
        return True
    s.close()
    return False


def test_sigterm_drains_in_flight_and_refuses_new(tmp_path, onnx_model_dir):
    srv = start_server(onnx_model_dir, tmp_path, "--drain-timeout", "20")
    body = json.dumps(ROW).encode()
    head = (b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    busy = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    idle = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        # an idle keep-alive connection
        idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        assert b"200 OK" in idle.recv(4096)
        # an in-flight request: headers and half of the body sent
        busy.sendall(head + body[:10])
        wait_for(lambda: metric(srv.metrics_text(), "modelops_requests_in_flight") >= 2, 10, "in-flight request", srv)

        srv.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: _connect_refused(srv.port), 10, "listener closed", srv)
        assert idle.recv(4096) == b""  # idle keep-alive connection closed by the server
        assert srv.proc.poll() is None  # still finishing the in-flight request

        busy.sendall(body[10:])
        f = busy.makefile("rb")
        status_line = f.readline()
        assert b"200" in status_line
        headers = {}
        while (line := f.readline()) not in (b"\r\n", b""):
            k, v = line.decode().split(":", 1)
            headers[k.strip().lower()] = v.strip()
        resp = json.loads(f.read(int(headers["content-length"])))
        assert resp["outputs"][0]["data"] == [0]
        assert headers["connection"] == "close"
        assert f.read() == b""
        assert srv.proc.wait(15) == 0
    finally:
        busy.close()
        idle.close()
        if srv.proc.poll() is None:
            srv.proc.kill()
    events = [r.get("event.action") for r in srv.logs()]
    assert "drain_started" in events and "drained" in events and "stopped" in events


def test_workers_share_port_and_metrics(tmp_path, onnx_model_dir):
    srv = start_server(onnx_model_dir, tmp_path, "--workers", "2", "--access-log-sample", "1")
    try:
        wait_for(lambda: all(metric(srv.metrics_text(), "modelops_worker_ready", worker=str(w)) == 1 for w in (0, 1)),
                 60, "both workers ready", srv)
        base = metric(srv.metrics_text(), "modelops_requests_total", endpoint="infer", code="200")
        n = 60
        for _ in range(n):  # a new connection each time, so SO_REUSEPORT spreads them
            assert srv.request("POST", "/v2/models/iris/infer", json.dumps(ROW))[0] == 200
        pids = {r["process.pid"] for r in srv.logs() if r.get("event.action") == "request" and r.get("modelops.endpoint") == "infer"}
        assert len(pids) == 2, "both workers should have served requests"
        for _ in range(6):  # whichever worker answers the scrape sees every worker's counts
            text = srv.metrics_text()
            assert metric(text, "modelops_requests_total", endpoint="infer", code="200") == base + n
            assert metric(text, "modelops_inference_duration_seconds_count") >= base + n
    finally:
        assert srv.stop() == 0


def test_crashed_worker_is_restarted_and_counts_survive(tmp_path, onnx_model_dir):
    srv = start_server(onnx_model_dir, tmp_path, "--workers", "2")
    try:
        for _ in range(5):
            assert srv.request("POST", "/v2/models/iris/infer", json.dumps(ROW))[0] == 200
        before = metric(srv.metrics_text(), "modelops_requests_total", endpoint="infer", code="200")
        wpids = [r["process.pid"] for r in srv.logs() if r.get("event.action") == "worker_started"]
        os.kill(wpids[0], signal.SIGKILL)
        wait_for(lambda: metric(srv.metrics_text(), "modelops_worker_restarts_total") == 1, 30, "restart", srv)
        wait_for(lambda: all(metric(srv.metrics_text(), "modelops_worker_ready", worker=str(w)) == 1 for w in (0, 1)),
                 60, "both workers ready again", srv)
        assert metric(srv.metrics_text(), "modelops_requests_total", endpoint="infer", code="200") == before
        assert srv.request("POST", "/v2/models/iris/infer", json.dumps(ROW))[0] == 200
    finally:
        assert srv.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to uid 10001")
def test_serves_as_non_root_from_read_only_dir(tmp_path, onnx_model_dir):
    base = Path(tempfile.mkdtemp(prefix="modelops-ro-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        model = base / "model"
        shutil.copytree(onnx_model_dir, model)
        for p in [model, *model.rglob("*")]:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        python, pythonpath = _python_for_other_user()
        log_path = tmp_path / "ro.log"
        env = dict(os.environ, PYTHONPATH=pythonpath, PYTHONDONTWRITEBYTECODE="1", HOME="/tmp")
        with open(log_path, "wb") as fh:
            proc = subprocess.Popen([python, "-m", "modelops_runtime", "serve", "--model-dir", str(model),
                                     "--host", "127.0.0.1", "--port", "0"], stdout=fh, stderr=subprocess.STDOUT,
                                    env=env, user=10001, group=10001, cwd="/")
        try:
            port = None
            deadline = time.monotonic() + 60
            while port is None and time.monotonic() < deadline and proc.poll() is None:
                for line in log_path.read_text().splitlines():
                    rec = json.loads(line) if line.startswith("{") else {}
                    if rec.get("event.action") == "starting":
                        port = rec["server.port"]
                        assert rec["user.id"] == 10001
                time.sleep(0.05)
            assert port is not None, log_path.read_text()

            def ready():
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                try:
                    c.request("GET", "/v2/health/ready")
                    return c.getresponse().status == 200
                except OSError:
                    return False
                finally:
                    c.close()

            deadline = time.monotonic() + 60
            while not ready():
                assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
    finally:
        for p in [base, *base.rglob("*")]:
            os.chmod(p, 0o755)
        shutil.rmtree(base, ignore_errors=True)


def _readable_by_other(p: Path) -> bool:
    return all(os.stat(q).st_mode & 0o005 for q in [p, *p.parents] if q != Path("/"))


def _python_for_other_user() -> tuple[str, str]:
    """An interpreter uid 10001 can run, with the runtime and this env's packages on PYTHONPATH
    (the same arrangement as the image: runtime source + installed deps)."""
    import site

    paths = [str(RUNTIME_DIR)] + [p for p in site.getsitepackages() if Path(p).is_dir()]
    if not all(_readable_by_other(Path(p)) for p in paths):
        pytest.skip("the runtime or its packages are not readable by another user here")
    exe = Path(sys.executable).resolve()
    if _readable_by_other(exe):
        return str(exe), os.pathsep.join(paths)
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for cand in (Path("/usr/bin") / ver, Path("/usr/local/bin") / ver):
        if cand.exists() and _readable_by_other(cand.resolve()):
            return str(cand), os.pathsep.join(paths)
    pytest.skip(f"no {ver} interpreter that another user can run")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_a_port_belongs_to_one_server(tmp_path, onnx_model_dir):
    """A second server asking for a port in use fails at start instead of sharing its traffic."""
    port = _free_port()
    first = start_server(onnx_model_dir, tmp_path, "--port", str(port), "--workers", "2")
    try:
        env = dict(os.environ, PYTHONPATH=str(RUNTIME_DIR))
        second = subprocess.run([sys.executable, "-m", "modelops_runtime", "serve", "--model-dir", str(onnx_model_dir),
                                 "--host", "127.0.0.1", "--port", str(port)],
                                env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stdout
        assert f"port {port} on 127.0.0.1 is already in use by another process" in second.stdout
        # every fresh connection still reaches the first server's own workers
        wait_for(lambda: all(metric(first.metrics_text(), "modelops_worker_ready", worker=str(w)) == 1 for w in (0, 1)),
                 60, "both workers ready", first)
        for _ in range(40):
            assert first.request("POST", "/v2/models/iris/infer", json.dumps(ROW))[0] == 200
        assert first.proc.poll() is None
    finally:
        assert first.stop() == 0


def _burn(seconds: float) -> subprocess.Popen:
    """A CPU hog that ends by itself: contention makes worker start-up orders vary."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def test_every_request_after_ready_is_answered_under_contention(tmp_path, onnx_model_dir):
    """Hunts the start-up window: once /v2/health/ready said 200, no worker may turn a request away.

    Several workers start while the CPUs are busy, so some finish loading long after others;
    each round sends fresh connections (spread over every accepting worker) right after readiness."""
    hogs = [_burn(90) for _ in range(3)]
    try:
        for rnd in range(6):
            srv = start_server(onnx_model_dir, tmp_path, "--workers", "3", timeout=90)
            try:
                statuses = [srv.request("POST", "/v2/models/iris/infer", json.dumps(ROW))[0] for _ in range(15)]
                assert statuses == [200] * 15, (rnd, statuses, srv.log_path.read_text()[-2000:])
            finally:
                assert srv.stop() == 0
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def test_sigterm_during_start_up_drains_every_worker(tmp_path, onnx_model_dir):
    """A stop that arrives while workers are still starting is a drain, not something to ignore.

    Before, such a SIGTERM was delivered before the worker's event loop ran and was lost: the
    workers loaded their models and served on until the supervisor's deadline killed them."""
    env = dict(os.environ, PYTHONPATH=str(RUNTIME_DIR))
    log_path = tmp_path / "early-stop.log"
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "modelops_runtime", "serve", "--model-dir", str(onnx_model_dir),
                                 "--host", "127.0.0.1", "--port", "0", "--workers", "3", "--drain-timeout", "2"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: '"event.action":"starting"' in log_path.read_text(), 30, "supervisor start")
        proc.send_signal(signal.SIGTERM)
        # A worker that ignored the signal would be killed at the deadline (exit code != 0).
        assert proc.wait(60) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    events = [json.loads(line).get("event.action") for line in log_path.read_text().splitlines() if line.startswith("{")]
    # A stop that comes before the last fork means fewer workers; each one forked must drain.
    assert 1 <= events.count("drained") == events.count("worker_started") <= 3 and "stopped" in events, events


def test_sigterm_while_forking_reaches_the_new_worker(monkeypatch):
    """The supervisor registers a worker before it handles a stop, and forks none after one.

    Before, a SIGTERM handled between the fork and the registration went to the older workers
    only; the new one served on until the drain deadline killed it (exit status 1, seen in CI)."""
    from modelops_runtime import supervisor as sup_mod

    killed, forked = [], []

    def fake_spawn(index, *args):
        forked.append(index)
        if index == 1:
            signal.raise_signal(signal.SIGTERM)  # arrives between the fork and the registration
        return 4000 + index

    monkeypatch.setattr(sup_mod, "_spawn", fake_spawn)
    monkeypatch.setattr(sup_mod, "_kill", lambda pid, sig: killed.append((pid, sig)))
    listener = socket.socket()
    opts = {"workers": 3, "feedback_capacity": 16, "drain_timeout": 2.0}
    sup = sup_mod.Supervisor("/nonexistent", {}, opts, listener, sup_mod.Logger(stream=open(os.devnull, "w")))
    previous = signal.signal(signal.SIGTERM, sup.on_signal)
    try:
        for i in range(3):
            sup.spawn(i, restarted=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert forked == [0, 1]
    assert sorted(killed) == [(4000, signal.SIGTERM), (4001, signal.SIGTERM)]
    assert sup.shutting_down and listener.fileno() == -1
