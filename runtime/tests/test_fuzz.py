"""Property-based fuzzing of request bodies against a live server on loopback.

Whatever the body, the server answers with a status below 500 and, for
errors, a JSON ``{"error": ...}``; afterwards it still serves a valid request.
"""

from __future__ import annotations

import http.client
import json
import socket

import pytest
from conftest import start_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DATATYPES = ["FP32", "FP64", "FP16", "INT64", "INT32", "INT8", "UINT8", "BOOL", "BYTES", "fp32", "", "FLOAT"]
PATHS = ["/v2/models/iris/infer", "/v2/models/iris/versions/1/infer", "/predict"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=30)
numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32), st.integers(-10, 10))
rows = st.lists(st.lists(numbers, min_size=0, max_size=6), min_size=0, max_size=4)

tensor = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input", "x", "", 3]),
        "shape": st.one_of(st.lists(st.integers(-2, 6), max_size=3), json_values),
        "datatype": st.one_of(st.sampled_from(DATATYPES), json_values),
        "data": st.one_of(rows, st.lists(numbers, max_size=10), json_values),
        "parameters": st.one_of(st.fixed_dictionaries({"binary_data_size": st.integers(-5, 50)}), json_values),
    },
)
infer_body = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.one_of(st.lists(tensor, max_size=3), json_values),
        "outputs": st.one_of(st.lists(st.fixed_dictionaries({"name": st.sampled_from(["label", "probabilities", "zzz"])}), max_size=3), json_values),
        "id": json_values,
        "parameters": json_values,
        "instances": st.one_of(rows, json_values),
    },
)
good_rows = st.lists(st.lists(numbers, min_size=4, max_size=4), min_size=1, max_size=300)
valid_ish = st.builds(
    lambda r, dt, rid, outs: {
        "id": rid,
        "inputs": [{"name": "input", "shape": [len(r), 4], "datatype": dt, "data": r}],
        **({"outputs": outs} if outs is not None else {}),
        "instances": r,
    },
    good_rows, st.sampled_from(["FP32", "FP64", "INT64", "FP16"]), st.text(max_size=5),
    st.one_of(st.none(), st.lists(st.fixed_dictionaries({"name": st.sampled_from(["label", "probabilities"])}), max_size=2)),
)
bodies = st.one_of(
    valid_ish.map(lambda d: json.dumps(d).encode()),
    infer_body.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "Inference-Header-Content-Length": st.one_of(st.integers(-3, 300).map(str), st.text(max_size=4).filter(lambda s: s.isascii() and s.isprintable())),
        "Content-Encoding": st.sampled_from(["gzip", "deflate", "identity", "br"]),
    },
)


@pytest.fixture(scope="module")
def fuzz_server(onnx_model_dir, tmp_path_factory):
    srv = start_server(onnx_model_dir, tmp_path_factory.mktemp("fuzz"), "--max-body-bytes", "4096", "--cache-size", "16")
    yield srv
    srv.stop()


class Client:
    def __init__(self, port):
        self.port = port
        self.conn = None

    def post(self, path, body, hdrs):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self.conn.request("POST", path, body=body, headers=hdrs)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return resp.status, data
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def _valid_ok(port) -> bool:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [6.7, 3.0, 5.2, 2.3]}]}
        c.request("POST", "/v2/models/iris/infer", body=json.dumps(body))
        r = c.getresponse()
        return r.status == 200 and json.loads(r.read())["outputs"][0]["data"] == [2]
    finally:
        c.close()


def test_fuzzed_bodies_never_crash_the_server(fuzz_server):
    client = Client(fuzz_server.port)
    seen = set()

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(path=st.sampled_from(PATHS), body=bodies, hdrs=headers)
    def check(path, body, hdrs):
        status, data = client.post(path, body, hdrs)
        seen.add(status)
        assert status < 500, (status, data[:300])
        if status >= 400:
            err = json.loads(data)
            assert isinstance(err.get("error"), str) and err["error"]
        else:
            assert status == 200 and data.startswith(b'{"')

    check()
    assert fuzz_server.proc.poll() is None
    assert _valid_ok(fuzz_server.port)
    print("statuses seen:", sorted(seen))
    assert {200, 400} <= seen  # the strategies reached both the model and the validation paths


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(raw=st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from([b"POST ", b"GET ", b"/v2/models/iris/infer", b" HTTP/1.1\r\n", b"Content-Length: 5\r\n",
                              b"Transfer-Encoding: chunked\r\n", b"Expect: 100-continue\r\n", b"\r\n", b"5\r\nhello\r\n",
                              b"0\r\n\r\n", b"{\"inputs\":", b"\x00\xff", b"Connection: close\r\n"]), max_size=12).map(b"".join),
))
def test_fuzzed_raw_http_never_crashes(fuzz_server, raw):
    s = socket.create_connection(("127.0.0.1", fuzz_server.port), timeout=5)
    try:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(2)
        try:
            data = s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            data = b""
        if data:
            status = int(data.split(b" ", 2)[1])
            assert status < 500 or status == 505, data[:300]
    finally:
        s.close()
    assert fuzz_server.proc.poll() is None


def test_server_still_serves_after_fuzzing(fuzz_server):
    assert _valid_ok(fuzz_server.port)
