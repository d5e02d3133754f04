"""The helper-thread answer path, without the heavy frameworks that normally select it.

A real App and HttpServer, with a real (ONNX) model forced to predict in the helper
thread, serve a loopback socket from an event loop in a background thread."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import numpy as np
import pytest

from conftest import metric
from modelops_runtime import config, loaders
from modelops_runtime import manifest as mf
from modelops_runtime.app import App
from modelops_runtime.httpserver import HttpServer
from modelops_runtime.jsonlog import Logger
from modelops_runtime.metrics import Layout, SharedMetrics, WorkerMetrics
from modelops_runtime.supervisor import drift_size
from test_server import post_request, read_response


@pytest.fixture(scope="module")
def offloaded(onnx_model_dir):
    manifest = mf.load(onnx_model_dir)
    opts = config.resolve({}, manifest.get("runtime"), environ={})
    metrics = WorkerMetrics(SharedMetrics(1, Layout(drift_size(manifest.get("reference")))), 0)
    app = App(manifest, opts, metrics, offload=True)
    app.set_ready(loaders.load_served(onnx_model_dir, manifest), 0.0)
    metrics.own[metrics.lay.listening] = 1.0
    http = HttpServer(app, opts, Logger(level="error"))
    loop = asyncio.new_event_loop()
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    srv = loop.run_until_complete(loop.create_server(http.connection, sock=sock))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield app, sock.getsockname()[1]
    loop.call_soon_threadsafe(srv.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _infer(i, row):
    body = {"id": f"r{i}", "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": row}]}
    return post_request("/v2/models/iris/infer", json.dumps(body).encode())


def test_offloaded_answers_keep_pipelined_order(offloaded, iris, iris_lr):
    app, port = offloaded
    assert app.offload
    X, _ = iris
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
    predict = post_request("/predict", json.dumps({"instances": X[:3].tolist()}).encode())
    bad = post_request("/v2/models/iris/infer", b"{")
    wrong_method = b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\n\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(_infer(0, X[0].tolist()) + live + _infer(1, X[1].tolist()) + bad + predict
                  + wrong_method + _infer(2, X[2].tolist()))
        f = s.makefile("rb")
        answers = [read_response(f) for _ in range(7)]
    finally:
        s.close()
    assert [a[0] for a in answers] == [200, 200, 200, 400, 200, 405, 200]
    assert [json.loads(answers[i][2])["id"] for i in (0, 2, 6)] == ["r0", "r1", "r2"]
    assert json.loads(answers[1][2]) == {"live": True}
    assert answers[5][1]["allow"] == "POST"
    got = np.array(json.loads(answers[4][2])["predictions"])
    assert np.array_equal(got, iris_lr.predict(X[:3]))
    assert app.predictor.executor is not None  # the model really ran in the helper thread
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        text = read_response(s.makefile("rb"))[2].decode()
    finally:
        s.close()
    assert metric(text, "modelops_requests_total", endpoint="infer", code="200") == 3
    assert metric(text, "modelops_requests_total", endpoint="infer", code="400") == 1
    assert metric(text, "modelops_requests_total", endpoint="infer", code="405") == 1
    assert metric(text, "modelops_requests_in_flight") == 1  # only the scrape itself
