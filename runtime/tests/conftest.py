"""Shared fixtures: iris models trained here, prepared model dirs, live servers on loopback."""

from __future__ import annotations

import http.client
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

RUNTIME_DIR = Path(__file__).resolve().parents[1]
if str(RUNTIME_DIR) not in sys.path:
    sys.path.insert(0, str(RUNTIME_DIR))

from modelops_runtime.prepare import prepare  # noqa: E402

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="session")
def iris():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return X, y


@pytest.fixture(scope="session")
def iris_lr(iris):
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    return LogisticRegression(max_iter=1000).fit(X, y)


def write_source(src: Path, model, X, kind: str = "joblib", reference: str | None = "csv") -> str:
    src.mkdir(parents=True, exist_ok=True)
    if kind == "joblib":
        import joblib

        joblib.dump(model, src / "model.joblib")
        entry = "model.joblib"
    else:
        with open(src / "model.pkl", "wb") as fh:
            pickle.dump(model, fh)
        entry = "model.pkl"
    if reference == "csv":
        np.savetxt(src / "reference.csv", X, delimiter=",", header=",".join(FEATURES), comments="")
    elif reference == "npy":
        np.save(src / "reference.npy", X)
    return entry


def make_model_dir(tmp: Path, model, X, *, kind="joblib", reference="csv", sample=True, **extra) -> tuple[Path, dict]:
    src = tmp / "src"
    entry = write_source(src, model, X, kind, reference)
    opts = {"name": "iris", "version": "1", "framework": "sklearn", "entrypoint": entry}
    if reference:
        opts["reference_data"] = "reference.csv" if reference == "csv" else "reference.npy"
    if sample:
        opts["sample"] = {"instances": X[:3].tolist(), "expected": model.predict(X[:3]).tolist()}
    opts.update(extra)
    out = tmp / "model"
    manifest = prepare(src, opts, out, log=lambda m: None)
    return out, manifest


@pytest.fixture(scope="session")
def onnx_model_dir(tmp_path_factory, iris, iris_lr):
    X, _ = iris
    out, manifest = make_model_dir(tmp_path_factory.mktemp("onnx"), iris_lr, X)
    assert manifest["framework"] == "onnx"
    return out


@pytest.fixture(scope="session")
def sklearn_model_dir(tmp_path_factory, iris, iris_lr):
    X, _ = iris
    out, manifest = make_model_dir(tmp_path_factory.mktemp("sk"), iris_lr, X, convert_to_onnx=False)
    assert manifest["framework"] == "sklearn"
    return out


# ------------------------------------------------------------------------------ live servers


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path):
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.url = f"127.0.0.1:{port}"

    def logs(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"raw": line})
        return out

    def request(self, method, path, body=None, headers=None, timeout=10.0):
        return request(self.port, method, path, body, headers, timeout)

    def infer(self, rows, **kw):
        body = {"inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}]}
        body.update(kw)
        return self.request("POST", "/v2/models/iris/infer", json.dumps(body))

    def metrics_text(self) -> str:
        status, _, body = self.request("GET", "/metrics")
        assert status == 200
        return body.decode()

    def stop(self, timeout=20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def request(port, method, path, body=None, headers=None, timeout=10.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def start_server(model_dir: Path, tmp: Path, *args: str, env: dict | None = None, wait_ready=True, timeout=60.0) -> Server:
    log_path = tmp / f"server-{time.monotonic_ns()}.log"
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(RUNTIME_DIR) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "modelops_runtime", "serve", "--model-dir", str(model_dir),
           "--host", "127.0.0.1", "--port", "0", *args]
    fh = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=full_env)
    fh.close()
    deadline = time.monotonic() + timeout
    port = None
    while time.monotonic() < deadline and port is None:
        for line in log_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("event.action") == "starting":
                port = rec["server.port"]
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log_path.read_text()}")
        time.sleep(0.05)
    if port is None:
        proc.kill()
        raise RuntimeError(f"server did not start: {log_path.read_text()}")
    srv = Server(proc, port, log_path)
    if wait_ready:
        wait_for(lambda: _ready(srv), timeout=deadline - time.monotonic(), what="server ready", srv=srv)
    return srv


def _ready(srv: Server) -> bool:
    try:
        return srv.request("GET", "/v2/health/ready", timeout=2)[0] == 200
    except OSError:
        return False


def wait_for(cond, timeout=30.0, what="condition", srv=None, interval=0.05):
    deadline = time.monotonic() + max(timeout, 0.1)
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except OSError:
            pass  # e.g. a connection reset while a worker restarts: try again
        if srv is not None and srv.proc.poll() is not None:
            raise AssertionError(f"server exited ({srv.proc.returncode}) while waiting for {what}: {srv.log_path.read_text()}")
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f": {srv.log_path.read_text()[-3000:]}" if srv else ""))


@pytest.fixture(scope="module")
def onnx_server(onnx_model_dir, tmp_path_factory):
    srv = start_server(onnx_model_dir, tmp_path_factory.mktemp("srv"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sklearn_server(sklearn_model_dir, tmp_path_factory):
    srv = start_server(sklearn_model_dir, tmp_path_factory.mktemp("srv"))
    yield srv
    srv.stop()


def parse_metrics(text: str) -> dict:
    """{(sample name, frozenset(labels)): value} via prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(text: str, _name: str, **labels) -> float:
    return parse_metrics(text).get((_name, frozenset(labels.items())), 0.0)
