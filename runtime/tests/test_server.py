"""The V2 HTTP API against a live server on loopback (ONNX-served and sklearn-served iris)."""

from __future__ import annotations

import gzip
import json
import socket

import numpy as np
import pytest
from conftest import metric, parse_metrics, request, start_server, wait_for

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(params=["onnx", "sklearn"])
def srv(request, onnx_server, sklearn_server):
    return onnx_server if request.param == "onnx" else sklearn_server


def test_health_and_metadata(srv):
    assert srv.request("GET", "/v2/health/live")[0] == 200
    status, headers, body = srv.request("GET", "/v2/health/ready")
    assert status == 200 and json.loads(body)["ready"] is True
    status, _, body = srv.request("GET", "/v2")
    meta = json.loads(body)
    assert status == 200 and meta["name"] == "modelops-runtime" and "extensions" in meta and meta["version"]
    for path in ("/v2/models/iris", "/v2/models/iris/versions/1"):
        status, _, body = srv.request("GET", path)
        meta = json.loads(body)
        assert status == 200
        assert meta["name"] == "iris" and meta["versions"] == ["1"] and meta["platform"]
        assert meta["inputs"][0]["name"] == "input" and meta["inputs"][0]["shape"] == [-1, 4]
        assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    for path in ("/v2/models/iris/ready", "/v2/models/iris/versions/1/ready"):
        assert srv.request("GET", path)[0] == 200


def test_infer_matches_sklearn(srv, iris_lr):
    status, headers, body = srv.infer(ROWS, id="req-42")
    assert status == 200, body
    resp = json.loads(body)
    assert resp["model_name"] == "iris" and resp["model_version"] == "1" and resp["id"] == "req-42"
    outs = {o["name"]: o for o in resp["outputs"]}
    assert outs["label"]["shape"] == [3] and outs["label"]["datatype"] == "INT64"
    assert outs["label"]["data"] == iris_lr.predict(np.array(ROWS)).tolist()
    assert outs["probabilities"]["shape"] == [3, 3]
    proba = np.array(outs["probabilities"]["data"]).reshape(3, 3)
    assert np.allclose(proba, iris_lr.predict_proba(np.array(ROWS)), atol=1e-5)
    assert headers["x-model-name"] == "iris" and headers["x-model-version"] == "1"


def test_infer_flat_data_and_versioned_path_and_outputs_subset(srv, iris_lr):
    body = {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP64", "data": sum(ROWS, [])}],
            "outputs": [{"name": "label"}]}
    status, _, out = srv.request("POST", "/v2/models/iris/versions/1/infer", json.dumps(body))
    assert status == 200, out
    resp = json.loads(out)
    assert [o["name"] for o in resp["outputs"]] == ["label"]
    assert resp["outputs"][0]["data"] == iris_lr.predict(np.array(ROWS)).tolist()
    assert "id" not in resp


def test_predict_endpoint(srv, iris, iris_lr):
    X, _ = iris
    status, headers, body = srv.request("POST", "/predict", json.dumps({"instances": X[::10].tolist()}))
    assert status == 200, body
    assert json.loads(body)["predictions"] == iris_lr.predict(X[::10]).tolist()
    assert headers["x-model-name"] == "iris"


def test_request_id_echoed_or_created(srv):
    _, h1, _ = srv.request("GET", "/v2/health/live", headers={"X-Request-ID": "abc-123"})
    assert h1["x-request-id"] == "abc-123"
    _, h2, _ = srv.request("GET", "/v2/health/live")
    _, h3, _ = srv.request("GET", "/v2/health/live")
    assert h2["x-request-id"] and h3["x-request-id"] and h2["x-request-id"] != h3["x-request-id"]
    # every response, errors included, carries the model headers
    status, h4, _ = srv.request("GET", "/nope")
    assert status == 404 and h4["x-model-name"] == "iris" and h4["x-model-version"] == "1" and h4["x-request-id"]


def _inp(**over):
    t = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
    t.update(over)
    return {"inputs": [t]}


@pytest.mark.parametrize(
    "method,path,body,status,fragment",
    [
        ("POST", "/v2/models/iris/infer", "{not json", 400, "not valid JSON"),
        ("POST", "/v2/models/iris/infer", "[1,2]", 400, "JSON object"),
        ("POST", "/v2/models/iris/infer", '{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[NaN,1,2,3]}]}', 400, "NaN"),
        ("POST", "/v2/models/iris/infer", json.dumps(_inp(shape=[1, 3], data=[1, 2, 3])), 400, "expects [-1, 4]"),
        ("POST", "/v2/models/iris/infer", json.dumps(_inp(shape=[2, 4])), 400, "needs 8 values"),
        ("POST", "/v2/models/iris/infer", json.dumps(_inp(datatype="BYTES")), 400, "datatype BYTES"),
        ("POST", "/v2/models/iris/infer", json.dumps(_inp(datatype="FP99")), 400, "unknown datatype"),
        ("POST", "/v2/models/iris/infer", json.dumps(_inp(data=["a", "b", "c", "d"])), 400, "only numbers"),
        ("POST", "/v2/models/iris/infer", json.dumps(_inp(data=[1e39, 1, 1, 1])), 400, "NaN or infinite"),
        ("POST", "/v2/models/iris/infer", json.dumps(_inp(name="x")), 400, "unknown input 'x'"),
        ("POST", "/v2/models/iris/infer", json.dumps({"inputs": []}), 400, "'inputs'"),
        ("POST", "/v2/models/iris/infer", json.dumps({**_inp(), "outputs": [{"name": "nope"}]}), 400, "unknown output 'nope'"),
        ("POST", "/v2/models/iris/infer", json.dumps({**_inp(), "id": 5}), 400, "'id' must be a string"),
        ("POST", "/v2/models/iris/infer", json.dumps(_inp(shape=[0, 4], data=[])), 400, "empty"),
        ("POST", "/v2/models/other/infer", json.dumps(_inp()), 404, "model 'other' not found"),
        ("POST", "/v2/models/iris/versions/9/infer", json.dumps(_inp()), 404, "no version '9'"),
        ("GET", "/v2/models/iris/infer", None, 405, "not allowed"),
        ("DELETE", "/v2/health/live", None, 405, "not allowed"),
        ("POST", "/predict", json.dumps({"instances": [1, 2, 3, 4]}), 400, "dimension"),
        ("POST", "/predict", json.dumps({"instances": [[1, 2, 3]]}), 400, "expects [-1, 4]"),
        ("POST", "/predict", json.dumps({"rows": [[1, 2, 3, 4]]}), 400, "instances"),
        ("GET", "/nothing/here", None, 404, "no such endpoint"),
    ],
)
def test_bad_requests_get_4xx_json_errors(srv, method, path, body, status, fragment):
    got, headers, out = srv.request(method, path, body)
    assert got == status, out
    err = json.loads(out)["error"]
    assert fragment in err, err
    if status == 405:
        assert "allow" in headers
    # and the server still serves
    assert srv.infer(ROWS[:1])[0] == 200


def test_oversized_body_413(tmp_path, onnx_model_dir):
    srv = start_server(onnx_model_dir, tmp_path, "--max-body-bytes", "2048")
    try:
        big = json.dumps(_inp(shape=[400, 4], data=[1.0] * 1600))
        status, _, out = srv.request("POST", "/v2/models/iris/infer", big)
        assert status == 413 and "exceeds the limit of 2048 bytes" in json.loads(out)["error"]
        # chunked bodies are counted as they arrive
        status, body = raw_exchange(srv.port, chunked_request("/v2/models/iris/infer", big.encode(), 500))
        assert status == 413
        assert srv.infer(ROWS)[0] == 200
    finally:
        assert srv.stop() == 0


def test_gzip_request_body(srv, iris_lr):
    body = gzip.compress(json.dumps(_inp()).encode())
    status, _, out = srv.request("POST", "/v2/models/iris/infer", body, headers={"Content-Encoding": "gzip"})
    assert status == 200, out
    status, _, out = srv.request("POST", "/v2/models/iris/infer", body, headers={"Content-Encoding": "br"})
    assert status == 415


# ---------------------------------------------------------------------------- raw HTTP/1.1 behaviour


def raw_exchange(port, payload: bytes, read_responses=1, timeout=5.0):
    """Send raw bytes, read ``read_responses`` HTTP responses; returns (status of last, list of bodies)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(payload)
        f = s.makefile("rb")
        statuses, bodies = [], []
        for _ in range(read_responses):
            status, headers, body = read_response(f)
            statuses.append(status)
            bodies.append(body)
        return statuses[-1], bodies
    finally:
        s.close()


def read_response(f):
    line = f.readline()
    if not line:
        raise ConnectionError("connection closed")
    status = int(line.split()[1])
    headers = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, v = h.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", 0))
    body = f.read(n) if n else b""
    return status, headers, body


def post_request(path, body: bytes, extra=b""):
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def chunked_request(path, body: bytes, size: int):
    chunks = b"".join(b"%x\r\n" % len(body[i:i + size]) + body[i:i + size] + b"\r\n" for i in range(0, len(body), size))
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")


def test_pipelined_requests_answered_in_order(onnx_server):
    a = post_request("/v2/models/iris/infer", json.dumps({**_inp(), "id": "first"}).encode())
    b = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
    c = post_request("/v2/models/iris/infer", json.dumps({**_inp(), "id": "third"}).encode())
    s = socket.create_connection(("127.0.0.1", onnx_server.port), timeout=5)
    try:
        s.sendall(a + b + c)
        f = s.makefile("rb")
        r1, r2, r3 = read_response(f), read_response(f), read_response(f)
    finally:
        s.close()
    assert json.loads(r1[2])["id"] == "first"
    assert json.loads(r2[2]) == {"live": True}
    assert json.loads(r3[2])["id"] == "third"


def test_chunked_request_body(onnx_server):
    status, bodies = raw_exchange(onnx_server.port, chunked_request("/v2/models/iris/infer", json.dumps(_inp()).encode(), 7))
    assert status == 200 and json.loads(bodies[0])["outputs"][0]["data"] == [0]


def test_expect_100_continue(onnx_server):
    body = json.dumps(_inp()).encode()
    s = socket.create_connection(("127.0.0.1", onnx_server.port), timeout=5)
    try:
        head = post_request("/v2/models/iris/infer", b"", b"Expect: 100-continue\r\n").replace(b"Content-Length: 0", b"Content-Length: %d" % len(body))
        s.sendall(head)
        f = s.makefile("rb")
        assert f.readline().startswith(b"HTTP/1.1 100")
        assert f.readline() == b"\r\n"
        s.sendall(body)
        status, _, out = read_response(f)
        assert status == 200 and json.loads(out)["outputs"][0]["data"] == [0]
    finally:
        s.close()


def test_connection_close_and_http10(onnx_server):
    s = socket.create_connection(("127.0.0.1", onnx_server.port), timeout=5)
    try:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        f = s.makefile("rb")
        status, headers, _ = read_response(f)
        assert status == 200 and headers["connection"] == "close"
        assert f.read() == b""  # server closed
    finally:
        s.close()
    s = socket.create_connection(("127.0.0.1", onnx_server.port), timeout=5)
    try:
        s.sendall(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
        f = s.makefile("rb")
        status, headers, body = read_response(f)
        assert status == 200 and body == b'{"live":true}'
        assert f.read() == b""
    finally:
        s.close()


def test_keep_alive_reuses_connection(onnx_server):
    s = socket.create_connection(("127.0.0.1", onnx_server.port), timeout=5)
    try:
        f = s.makefile("rb")
        for i in range(5):
            s.sendall(post_request("/v2/models/iris/infer", json.dumps({**_inp(), "id": str(i)}).encode()))
            status, headers, body = read_response(f)
            assert status == 200 and json.loads(body)["id"] == str(i) and "connection" not in headers
    finally:
        s.close()


def test_malformed_http_gets_400_and_server_survives(onnx_server):
    status, bodies = raw_exchange(onnx_server.port, b"GARBAGE\r\n\r\n")
    assert status == 400 and "malformed" in json.loads(bodies[0])["error"]
    status, _ = raw_exchange(onnx_server.port, b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n")
    assert status == 431
    assert onnx_server.infer(ROWS)[0] == 200


def test_head_request_has_no_body(onnx_server):
    s = socket.create_connection(("127.0.0.1", onnx_server.port), timeout=5)
    try:
        s.sendall(b"HEAD /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\nGET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        f = s.makefile("rb")
        line = f.readline()
        assert b"200" in line
        while f.readline() not in (b"\r\n", b""):
            pass
        status, _, body = read_response(f)  # next response starts right away: HEAD sent no body
        assert status == 200 and body == b'{"live":true}'
    finally:
        s.close()


# ---------------------------------------------------------------------------- tritonclient


def test_tritonclient_http(srv, iris_lr):
    tc = pytest.importorskip("tritonclient.http")
    client = tc.InferenceServerClient(url=srv.url, concurrency=1)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("iris") and client.is_model_ready("iris", "1")
        meta = client.get_model_metadata("iris")
        assert meta["name"] == "iris" and meta["inputs"][0]["shape"] == [-1, 4]
        assert client.get_server_metadata()["name"] == "modelops-runtime"
        x = np.array(ROWS, dtype=np.float32)
        want = iris_lr.predict(x.astype(np.float64))
        for binary_in in (False, True):
            inp = tc.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary_in)
            # default: no outputs listed -> binary outputs
            res = client.infer("iris", [inp], request_id="t1")
            assert np.array_equal(res.as_numpy("label"), want)
            assert res.as_numpy("probabilities").shape == (3, 3)
            assert res.get_response()["id"] == "t1"
            # JSON outputs, subset, versioned
            res = client.infer("iris", [inp], model_version="1",
                               outputs=[tc.InferRequestedOutput("label", binary_data=False)])
            assert np.array_equal(res.as_numpy("label"), want)
            assert res.as_numpy("probabilities") is None
        with pytest.raises(Exception, match="not found"):
            client.infer("missing", [inp])
    finally:
        client.close()


# ---------------------------------------------------------------------------- metrics, cache, drift


def test_metrics_format_and_counters_move(onnx_server):
    before = onnx_server.metrics_text()
    parsed = parse_metrics(before)  # raises if the format is invalid
    names = {k[0] for k in parsed}
    for n in ("modelops_requests_total", "modelops_request_duration_seconds_bucket", "modelops_requests_in_flight",
              "modelops_inference_duration_seconds_count", "modelops_model_load_duration_seconds",
              "modelops_prediction_cache_hits_total", "modelops_prediction_cache_misses_total",
              "modelops_model_info", "modelops_feature_drift_psi"):
        assert n in names, n
    assert metric(before, "modelops_model_info", name="iris", version="1", framework="onnx",
                  original_framework="sklearn", runtime_version=__import__("modelops_runtime").__version__) == 1
    ok0 = metric(before, "modelops_requests_total", endpoint="infer", code="200")
    bad0 = metric(before, "modelops_requests_total", endpoint="infer", code="400")
    inf0 = metric(before, "modelops_inference_duration_seconds_count")
    for _ in range(5):
        assert onnx_server.infer(ROWS)[0] == 200
    assert onnx_server.request("POST", "/v2/models/iris/infer", "{")[0] == 400
    after = onnx_server.metrics_text()
    assert metric(after, "modelops_requests_total", endpoint="infer", code="200") == ok0 + 5
    assert metric(after, "modelops_requests_total", endpoint="infer", code="400") == bad0 + 1
    assert metric(after, "modelops_inference_duration_seconds_count") == inf0 + 5
    assert metric(after, "modelops_request_duration_seconds_count", endpoint="infer") >= ok0 + 6
    assert metric(after, "modelops_model_load_duration_seconds", worker="0") > 0
    # the scrape itself is in flight while rendering
    assert metric(after, "modelops_requests_in_flight") == 1


def test_prediction_cache_hits_and_misses(tmp_path, onnx_model_dir):
    srv = start_server(onnx_model_dir, tmp_path, "--cache-size", "2")
    try:
        m0 = srv.metrics_text()
        h0 = metric(m0, "modelops_prediction_cache_hits_total")
        s0 = metric(m0, "modelops_prediction_cache_misses_total")
        r1 = srv.infer([ROWS[0]])[2]
        r2 = srv.infer([ROWS[0]])[2]   # hit
        srv.infer([ROWS[1]])           # miss
        srv.infer([ROWS[2]])           # miss, evicts ROWS[0] (size 2)
        srv.infer([ROWS[0]])           # miss again
        m1 = srv.metrics_text()
        assert metric(m1, "modelops_prediction_cache_hits_total") == h0 + 1
        assert metric(m1, "modelops_prediction_cache_misses_total") == s0 + 4
        assert json.loads(r1)["outputs"] == json.loads(r2)["outputs"]
    finally:
        srv.stop()


def test_drift_psi_rises_for_shifted_inputs(tmp_path, onnx_model_dir, iris):
    X, _ = iris
    srv = start_server(onnx_model_dir, tmp_path, "--drift-window", "150")
    try:
        for i in range(0, 150, 10):
            assert srv.infer(X[i:i + 10].tolist())[0] == 200
        text = srv.metrics_text()
        base = {f: metric(text, "modelops_feature_drift_psi", feature=f)
                for f in ("sepal_length", "sepal_width", "petal_length", "petal_width")}
        assert metric(text, "modelops_drift_window_rows") == 150
        assert all(v < 0.05 for v in base.values()), base  # same data as the reference
        shifted = X + np.array([3.0, 2.0, 4.0, 2.5])
        for i in range(0, 150, 10):
            assert srv.infer(shifted[i:i + 10].tolist())[0] == 200
        text = srv.metrics_text()
        after = {f: metric(text, "modelops_feature_drift_psi", feature=f) for f in base}
        assert all(v > 1.0 for v in after.values()), after  # window now holds only shifted rows
        assert metric(text, "modelops_drift_window_rows") == 150
    finally:
        srv.stop()


def test_idle_and_slow_connections_are_closed(tmp_path, onnx_model_dir):
    """Keep-alive connections idle past the timeout are closed; a request that never finishes gets 408."""
    srv = start_server(onnx_model_dir, tmp_path, "--keepalive-timeout", "1", "--request-timeout", "1")
    try:
        idle = socket.create_connection(("127.0.0.1", srv.port), timeout=15)
        slow = None
        try:
            idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            f = idle.makefile("rb")
            assert read_response(f)[0] == 200
            assert f.read() == b""  # closed by the server after ~1-2 s idle (socket timeout 15 s)
            slow = socket.create_connection(("127.0.0.1", srv.port), timeout=15)
            slow.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
            status, headers, body = read_response(slow.makefile("rb"))
            assert status == 408 and "not received within" in json.loads(body)["error"]
        finally:
            idle.close()
            if slow is not None:
                slow.close()
        assert srv.infer(ROWS)[0] == 200
    finally:
        assert srv.stop() == 0
