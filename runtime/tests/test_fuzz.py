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
from hypothesis import HealthCheck, example, given, settings
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
# Feedback bodies: ids that exist (fz-0 .. fz-4, answered by the fixture), ids that do not, any JSON.
truth_values = st.one_of(st.lists(st.one_of(st.integers(-3, 5), st.booleans(), st.text(max_size=3), st.floats(allow_nan=False),
                                            json_values), max_size=8), json_values)
feedback_body = st.fixed_dictionaries(
    {},
    optional={"id": st.one_of(st.sampled_from([f"fz-{i}" for i in range(5)]), json_values), "truth": truth_values},
)
FEEDBACK_PATHS = ["/v2/models/iris/feedback", "/v2/models/iris/versions/1/feedback"]
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
    for i in range(5):  # answers the feedback fuzzing can label (1 to 5 rows)
        status, _, _ = srv.infer([[5.1, 3.5, 1.4, 0.2]] * (i + 1), id=f"fz-{i}")
        assert status == 200
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


def test_fuzzed_feedback_bodies_never_crash_the_server(fuzz_server):
    client = Client(fuzz_server.port)
    seen = set()

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(path=st.sampled_from(FEEDBACK_PATHS), body=st.one_of(feedback_body.map(lambda d: json.dumps(d).encode()),
                                                               st.binary(max_size=100)),
           rid=st.one_of(st.none(), st.sampled_from(["fz-1", "nope"])))
    # Always tried, whatever the random draw: an id nobody answered, and a body that is no JSON.
    @example(path=FEEDBACK_PATHS[0], body=json.dumps({"id": "never-answered", "truth": [0]}).encode(), rid=None)
    @example(path=FEEDBACK_PATHS[1], body=b"{not json", rid=None)
    def check(path, body, rid):
        status, data = client.post(path, body, {"X-Request-ID": rid} if rid else {})
        seen.add(status)
        assert status in (200, 400, 404, 409, 413), (status, data[:300])
        if status >= 400:
            err = json.loads(data)
            assert isinstance(err.get("error"), str) and err["error"]
        else:
            out = json.loads(data)
            assert out["id"].startswith("fz-") and 1 <= out["rows"] <= 5 and 0 <= out["correct"] <= out["rows"]

    check()
    assert fuzz_server.proc.poll() is None
    assert _valid_ok(fuzz_server.port)
    assert {400, 404} <= seen


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


# ---------------------------------------------------------------- every field, every JSON type
# A valid request; each field the runtime reads is replaced (one or several at a time) by
# a value of every JSON type, or removed. The answer is 200, or a 4xx JSON error that
# names one of the fields that was changed; no answer is a 500 and no worker restarts.
VALID_INFER = {
    "id": "req-1",
    "parameters": {"binary_data_output": False},
    "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": None},
                "data": [6.7, 3.0, 5.2, 2.3]}],
    "outputs": [{"name": "label", "parameters": {"binary_data": False}}],
}
VALID_PREDICT = {"instances": [[6.7, 3.0, 5.2, 2.3]]}
INFER_FIELDS = [
    ("id",), ("parameters",), ("parameters", "binary_data_output"), ("inputs",), ("inputs", 0),
    ("inputs", 0, "name"), ("inputs", 0, "shape"), ("inputs", 0, "shape", 0), ("inputs", 0, "shape", 1),
    ("inputs", 0, "datatype"), ("inputs", 0, "parameters"), ("inputs", 0, "parameters", "binary_data_size"),
    ("inputs", 0, "data"), ("inputs", 0, "data", 0), ("outputs",), ("outputs", 0), ("outputs", 0, "name"),
    ("outputs", 0, "parameters"), ("outputs", 0, "parameters", "binary_data"),
]
PREDICT_FIELDS = [("instances",), ("instances", 0), ("instances", 0, 0)]
REMOVE = object()

every_json_type = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**31), 2**31),
    st.sampled_from([2**63, 2**64 + 1, -(2**63) - 1, 10**30, -1, 0]),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1e308, -1e308, 5e-324, 0.5]),
    st.text(max_size=12), st.sampled_from(["", "FP32", "input", "label", "BYTES", "1", "[]"]),
    st.lists(st.one_of(st.integers(-3, 6), st.floats(-10, 10), st.text(max_size=3)), max_size=5),
    st.sampled_from([[], {}, [1, 2], {"a": 1}, [[1, 2], [3]], [[[[[[1]]]]]], {"name": "input"}, [None], [True]]),
    st.dictionaries(st.sampled_from(["name", "shape", "datatype", "data", "parameters", "binary_data", "x"]),
                    st.one_of(st.none(), st.integers(-2, 5), st.text(max_size=4), st.lists(st.integers(0, 4), max_size=3)),
                    max_size=4),
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3)),
                 lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
                 max_leaves=12),
)


def _field_name(path) -> str:
    """The name an error must mention for a change at this path: the last key, or the list holding an index."""
    keys = [p for p in path if isinstance(p, str)]
    return keys[-1]


def _mutate(doc, path, value):
    import copy

    out = copy.deepcopy(doc)
    cur = out
    for p in path[:-1]:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and isinstance(p, int) and p < len(cur):
            cur = cur[p]
        else:
            return out  # an earlier change removed the parent: nothing left to change here
    last = path[-1]
    if isinstance(cur, dict):
        if value is REMOVE:
            cur.pop(last, None)
        else:
            cur[last] = value
    elif isinstance(cur, list) and isinstance(last, int) and last < len(cur):
        if value is REMOVE:
            del cur[last]
        else:
            cur[last] = value
    return out


def _restarts(port) -> float:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    finally:
        c.close()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("modelops_worker_restarts_total"))


def _check_field_answer(status, data, paths):
    assert status < 500, (status, data[:300], paths)
    if status >= 400:
        err = json.loads(data)["error"]
        names = {_field_name(p) for p in paths}
        assert any(n in err for n in names), (err, paths)
    else:
        assert status == 200 and data[:1] in (b"{", b"["), data[:100]


@pytest.mark.parametrize("path,base,fields", [
    ("/v2/models/iris/infer", VALID_INFER, INFER_FIELDS),
    ("/predict", VALID_PREDICT, PREDICT_FIELDS),
])
def test_every_field_with_every_json_type(fuzz_server, path, base, fields):
    client = Client(fuzz_server.port)
    status, data = client.post(path, json.dumps(base).encode(), {})
    assert status == 200, data  # the unchanged request is valid
    restarts = _restarts(fuzz_server.port)
    seen = {}

    @settings(max_examples=500 if len(fields) > 5 else 200, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    @given(changes=st.lists(st.tuples(st.sampled_from(fields), st.one_of(every_json_type, st.just(REMOVE))),
                            min_size=1, max_size=3, unique_by=lambda c: c[0]))
    def check(changes):
        doc = base
        for field, value in changes:
            doc = _mutate(doc, field, value)
        status, data = client.post(path, json.dumps(doc).encode(), {})
        seen[status] = seen.get(status, 0) + 1
        _check_field_answer(status, data, [f for f, _ in changes])

    check()
    print(path, "statuses seen:", seen)
    assert {200, 400} <= set(seen)
    assert _restarts(fuzz_server.port) == restarts
    assert fuzz_server.proc.poll() is None and _valid_ok(fuzz_server.port)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(value=st.one_of(st.integers(-(2**70), 2**70).map(str), st.sampled_from(["", " ", "1.5", "1e3", "0x10", "+3", "-0",
                                                                                "9" * 40, "١٢", "12 ", "NaN"]),
                       st.text(max_size=8).filter(lambda s: s.isascii() and s.isprintable())))
def test_header_length_with_every_value(fuzz_server, value):
    body = json.dumps(VALID_INFER).encode()
    c = Client(fuzz_server.port)
    status, data = c.post("/v2/models/iris/infer", body, {"Inference-Header-Content-Length": value.encode("utf-8")})
    _check_field_answer(status, data, [("Inference-Header-Content-Length",)])


def test_server_still_serves_after_fuzzing(fuzz_server):
    assert _valid_ok(fuzz_server.port)
