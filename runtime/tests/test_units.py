"""Pure-function behaviour: PSI, the drift window, config precedence, the cache, the decoder."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from modelops_runtime import config, drift
from modelops_runtime.cache import PredictionCache
from modelops_runtime.protocol import Decoder, RequestError, encode_infer
from modelops_runtime.schema import TensorSpec


def test_psi_zero_for_same_distribution_and_large_for_shift():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(5000, 1))
    stats = drift.reference_stats(ref, ["x"], bins=10)
    lay = drift.DriftLayout(stats)
    edges = lay.edges[0]
    same = np.bincount(drift.bin_index(edges, rng.normal(size=5000)), minlength=edges.size + 1)
    moved = np.bincount(drift.bin_index(edges, rng.normal(loc=2.0, size=5000)), minlength=edges.size + 1)
    assert drift.psi(lay.expected[0], same) < 0.02
    assert drift.psi(lay.expected[0], moved) > 1.0
    assert np.isnan(drift.psi(lay.expected[0], np.zeros(edges.size + 1)))


def test_drift_window_slides_and_evicts():
    ref = np.arange(100, dtype=float).reshape(-1, 1)
    lay = drift.DriftLayout(drift.reference_stats(ref, ["x"], bins=4))
    counts = np.zeros(lay.size)
    rows = []
    win = drift.DriftWindow(lay, 10, counts, rows.append)
    win.add(np.full((6, 1), 1.0))   # bin 0
    win.flush()
    assert counts.sum() == 6 and counts[0] == 6 and rows[-1] == 6
    win.add(np.full((7, 1), 99.0))  # last bin; evicts 3 of the first rows
    win.flush()
    assert counts.sum() == 10 and counts[0] == 3 and counts[-1] == 7 and rows[-1] == 10
    win.add(np.full((25, 1), 50.0))  # more than the window: only the last 10 count
    win.flush()
    assert counts.sum() == 10 and counts[0] == 0 and counts[-1] == 0
    win.add(np.array([[np.nan]]))  # non-finite values are not counted
    win.flush()
    assert counts.sum() == 9


def test_config_precedence():
    cli = {"workers": None, "cache_size": "5"}
    env = {"MODELOPS_WORKERS": "3", "MODELOPS_CACHE_SIZE": "9", "MODELOPS_PORT": "9000"}
    manifest_runtime = {"workers": 2, "cache_size": 7, "drift_window": 50}
    got = config.resolve(cli, manifest_runtime, env)
    assert got["cache_size"] == 5            # flag beats env and manifest
    assert got["workers"] == 3               # env beats manifest
    assert got["drift_window"] == 50         # manifest beats default
    assert got["port"] == 9000 and got["host"] == "0.0.0.0"
    with pytest.raises(config.ConfigError, match="MODELOPS_WORKERS"):
        config.resolve({}, {}, {"MODELOPS_WORKERS": "zero"})
    assert config.resolve({}, {}, {"MODELOPS_ALLOW_NON_FINITE": "yes"})["allow_non_finite"] is True


def test_cache_is_lru_and_keyed_by_values():
    c = PredictionCache(2)
    k1 = c.key({"input": np.array([[1.0, 2.0]], dtype=np.float32)}, None)
    k1b = c.key({"input": np.array([[1.0, 2.0]], dtype=np.float32)}, None)
    k1_64 = c.key({"input": np.array([[1.0, 2.0]], dtype=np.float64)}, None)
    k1_out = c.key({"input": np.array([[1.0, 2.0]], dtype=np.float32)}, ["label"])
    assert k1 == k1b and k1 != k1_64 and k1 != k1_out
    k2 = c.key({"input": np.array([[3.0, 2.0]], dtype=np.float32)}, None)
    k3 = c.key({"input": np.array([[4.0, 2.0]], dtype=np.float32)}, None)
    c.put(k1, "a")
    c.put(k2, "b")
    assert c.get(k1) == "a"  # k1 now most recent
    c.put(k3, "c")           # evicts k2
    assert c.get(k2) is None and c.get(k1) == "a" and c.get(k3) == "c"
    assert c.key({"input": np.zeros((100000,), dtype=np.float32)}, None) is None  # too big to cache


class _M:
    def __init__(self, inputs, outputs=("y",)):
        self.inputs = inputs
        self.output_names = list(outputs)


def test_decoder_binary_inputs_and_outputs():
    dec = Decoder(_M([TensorSpec("x", "FP32", [-1, 2])]))
    header = json.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 16}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    body = header + struct.pack("<4f", 1, 2, 3, 4)
    rid, feeds, wanted, binary = dec.decode_infer(body, len(header))
    assert feeds["x"].tolist() == [[1, 2], [3, 4]] and wanted == ["y"] and binary == {"y"}
    with pytest.raises(RequestError, match="binary_data_size 16 does not fit the body"):
        dec.decode_infer(header + b"\x00" * 12, len(header))
    short = header.replace(b'"binary_data_size": 16', b'"binary_data_size": 12')
    with pytest.raises(RequestError, match="needs 16 bytes, got 12"):
        dec.decode_infer(short + b"\x00" * 12, len(short))
    out, hlen = encode_infer("m", "1", "r", {"y": np.array([7, 8], dtype=np.int64)}, ["y"], {"y"})
    head = json.loads(out[:hlen])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 16 and head["id"] == "r"
    assert np.frombuffer(out[hlen:], dtype="<i8").tolist() == [7, 8]


def test_decoder_bytes_and_int_rules():
    dec = Decoder(_M([TensorSpec("s", "BYTES", [-1]), TensorSpec("n", "INT64", [-1])]))
    body = json.dumps({"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
                                  {"name": "n", "shape": [2], "datatype": "INT32", "data": [1, 2]}]}).encode()
    _, feeds, _, _ = dec.decode_infer(body, None)
    assert feeds["s"].tolist() == ["a", "b"] and feeds["n"].dtype == np.int64
    bad = json.dumps({"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "data": ["a"]},
                                 {"name": "n", "shape": [1], "datatype": "FP32", "data": [1.5]}]}).encode()
    with pytest.raises(RequestError, match="datatype FP32, model expects INT64"):
        dec.decode_infer(bad, None)
    missing = json.dumps({"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}).encode()
    with pytest.raises(RequestError, match=r"missing input\(s\) \['n'\]"):
        dec.decode_infer(missing, None)


def test_non_finite_allowed_when_configured():
    spec = TensorSpec("x", "FP64", [-1, 1])
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1e39]}]}).encode()
    with pytest.raises(RequestError, match="NaN or infinite"), np.errstate(over="ignore"):
        Decoder(_M([spec])).decode_infer(body, None)
    with np.errstate(over="ignore"):
        _, feeds, _, _ = Decoder(_M([spec]), allow_non_finite=True).decode_infer(body, None)
    assert np.isinf(feeds["x"][0, 0])


def test_requirement_files_are_pinned_and_packaged():
    from modelops_runtime.deps import REQ_DIR, requirement_files, requirement_lines

    names = {p.name for p in REQ_DIR.glob("*.txt")}
    assert {"base.txt", "sklearn.txt", "onnx.txt", "keras.txt", "tensorflow.txt", "torchscript.txt", "convert.txt"} <= names
    for p in REQ_DIR.glob("*.txt"):
        for line in p.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                assert "==" in line, f"{p.name}: {line} is not pinned"
    assert "torch==2.13.0" in requirement_lines("torchscript")
    build = requirement_lines("sklearn", "build")
    assert any(x.startswith("skl2onnx==") for x in build) and any(x.startswith("onnxruntime==") for x in build)
    assert not any(x.startswith("skl2onnx==") for x in requirement_lines("sklearn"))
    assert requirement_files("onnx")[0].name == "base.txt"


def test_max_batch_rows_gives_413():
    dec = Decoder(_M([TensorSpec("x", "FP32", [-1, 1])]), max_batch_rows=2)
    ok = json.dumps({"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [1, 2]}]}).encode()
    assert dec.decode_infer(ok, None)[1]["x"].shape == (2, 1)
    big = json.dumps({"inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP32", "data": [1, 2, 3]}]}).encode()
    with pytest.raises(RequestError) as exc:
        dec.decode_infer(big, None)
    assert exc.value.status == 413 and "limit is 2" in exc.value.message
