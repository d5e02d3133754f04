"""Keras, TensorFlow SavedModel and TorchScript: tiny real models built here, prepared and served.

Marked heavy: they need requirements-heavy.txt (tensorflow-cpu, torch); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import RUNTIME_DIR, start_server

from modelops_runtime import loaders
from modelops_runtime import manifest as mf
from modelops_runtime.prepare import PrepareError, prepare

pytestmark = pytest.mark.heavy

X = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return pytest.importorskip("tensorflow", reason="tensorflow-cpu not installed (requirements-heavy.txt)")


def _torch():
    return pytest.importorskip("torch", reason="torch not installed (requirements-heavy.txt)")


def _keras_model():
    _tf()
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    return model


@pytest.mark.parametrize("filename", ["model.keras", "model.h5"])
def test_keras_prepare_and_load(tmp_path, filename):
    model = _keras_model()
    src = tmp_path / "src"
    src.mkdir()
    model.save(src / filename)
    want = np.asarray(model(X, training=False))
    opts = {"name": "tiny", "version": "1", "framework": "keras", "entrypoint": filename,
            "sample": {"instances": X.tolist(), "expected": want.tolist(), "tolerance": 1e-5}}
    m = prepare(src, opts, tmp_path / "out", log=lambda _: None)
    assert m["framework"] == "keras" and m["conversion"]["attempted"] is False
    assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert m["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}]
    served = loaders.load_served(tmp_path / "out", m)
    assert np.allclose(served.predict({"input": X})["output"], want, atol=1e-6)


def test_keras_served_over_http(tmp_path):
    model = _keras_model()
    src = tmp_path / "src"
    src.mkdir()
    model.save(src / "model.keras")
    want = np.asarray(model(X, training=False))
    opts = {"name": "tiny", "version": "3", "framework": "keras", "entrypoint": "model.keras",
            "sample": {"instances": X.tolist(), "expected": want.tolist(), "tolerance": 1e-5}}
    prepare(src, opts, tmp_path / "out", log=lambda _: None)
    srv = start_server(tmp_path / "out", tmp_path, timeout=120)
    try:
        body = {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": X.tolist()}]}
        status, headers, out = srv.request("POST", "/v2/models/tiny/versions/3/infer", json.dumps(body), timeout=60)
        assert status == 200, out
        resp = json.loads(out)
        assert resp["outputs"][0]["shape"] == [3, 3]
        assert np.allclose(np.array(resp["outputs"][0]["data"]).reshape(3, 3), want, atol=1e-5)
        assert headers["x-model-version"] == "3"
    finally:
        assert srv.stop() == 0


def _saved_model(path):
    tf = _tf()

    class Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
        def serve(self, features):
            return {"scores": tf.matmul(features, self.w)}

    mod = Tiny()
    tf.saved_model.save(mod, str(path), signatures={"serving_default": mod.serve})
    return X @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0)


def test_savedmodel_prepare_load_and_tamper(tmp_path):
    src = tmp_path / "src"
    want = _saved_model(src / "saved")
    opts = {"name": "sm", "version": "1", "framework": "tensorflow", "entrypoint": "saved",
            "sample": {"instances": X.tolist(), "expected": want.tolist(), "tolerance": 1e-5}}
    m = prepare(src, opts, tmp_path / "out", log=lambda _: None)
    assert m["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert m["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}]
    assert m["entrypoint"] == "original/saved"
    assert any(f.startswith("original/saved/variables/") for f in m["files"])
    assert "original/saved/saved_model.pb" in m["files"]
    served = loaders.load_served(tmp_path / "out", m)
    assert np.allclose(served.predict({"features": X})["scores"], want, atol=1e-5)
    # any changed file in the directory is refused before loading
    var = next(f for f in m["files"] if f.startswith("original/saved/variables/variables.data"))
    with open(tmp_path / "out" / var, "r+b") as fh:
        fh.seek(0)
        b = fh.read(1)
        fh.seek(0)
        fh.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(mf.ChecksumError, match="checksum mismatch for original/saved/variables"):
        loaders.load_served(tmp_path / "out", m)


def _torchscript(path):
    torch = _torch()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    scripted = torch.jit.script(net.eval())
    scripted.save(str(path))
    with torch.no_grad():
        return net(torch.from_numpy(X)).numpy()


def test_torchscript_prepare_and_serve(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    want = _torchscript(src / "model.pt")
    opts = {"name": "torchy", "version": "1", "framework": "torchscript", "entrypoint": "model.pt",
            "sample": {"instances": X.tolist(), "expected": want.tolist(), "tolerance": 1e-5}}
    m = prepare(src, opts, tmp_path / "out", log=lambda _: None)
    assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert m["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}]
    srv = start_server(tmp_path / "out", tmp_path, timeout=120)
    try:
        tc = pytest.importorskip("tritonclient.http")
        client = tc.InferenceServerClient(url=srv.url)
        try:
            inp = tc.InferInput("input", [3, 4], "FP32")
            inp.set_data_from_numpy(X)
            res = client.infer("torchy", [inp])
            assert np.allclose(res.as_numpy("output"), want, atol=1e-5)
        finally:
            client.close()
    finally:
        assert srv.stop() == 0


def test_torchscript_needs_schema_or_sample(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _torchscript(src / "model.pt")
    opts = {"name": "torchy", "version": "1", "framework": "torchscript", "entrypoint": "model.pt"}
    with pytest.raises(PrepareError, match="TorchScript models carry no input schema"):
        prepare(src, opts, tmp_path / "out", log=lambda _: None)
    opts["inputs"] = [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    opts["outputs"] = [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    m = prepare(src, opts, tmp_path / "out", log=lambda _: None)
    served = loaders.load_served(tmp_path / "out", m)
    assert served.predict({"x": X})["y"].shape == (3, 3)


@pytest.mark.parametrize("framework,filename", [("torchscript", "model.pt"), ("keras", "model.keras")])
def test_corrupt_heavy_model_is_reported(tmp_path, framework, filename):
    (_torch if framework == "torchscript" else _tf)()
    src = tmp_path / "src"
    src.mkdir()
    (src / filename).write_bytes(b"PK\x03\x04 definitely not a model")
    (tmp_path / "options.json").write_text(json.dumps(
        {"name": "bad", "version": "1", "framework": framework, "entrypoint": filename,
         "sample": {"instances": X.tolist()}}))
    env = dict(os.environ, PYTHONPATH=str(RUNTIME_DIR))
    res = subprocess.run([sys.executable, "-m", "modelops_runtime", "prepare", "--source", str(src), "--options",
                          str(tmp_path / "options.json"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2
    assert filename in res.stderr and framework in res.stderr


def test_offloaded_inference_keeps_pipelined_order(tmp_path):
    """Heavy frameworks predict in a helper thread; pipelined answers still come back in order."""
    import socket

    from conftest import metric
    from test_server import post_request, read_response

    src = tmp_path / "src"
    src.mkdir()
    want = _torchscript(src / "model.pt")
    opts = {"name": "torchy", "version": "1", "framework": "torchscript", "entrypoint": "model.pt",
            "sample": {"instances": X.tolist(), "expected": want.tolist(), "tolerance": 1e-5}}
    prepare(src, opts, tmp_path / "out", log=lambda _: None)
    srv = start_server(tmp_path / "out", tmp_path, timeout=120)
    try:
        def infer(i):
            body = {"id": f"r{i}", "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": X[i % 3].tolist()}]}
            return post_request("/v2/models/torchy/infer", json.dumps(body).encode())

        live = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
        predict = post_request("/predict", json.dumps({"instances": X.tolist()}).encode())
        bad = post_request("/v2/models/torchy/infer", b"{")
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        try:
            s.sendall(infer(0) + live + infer(1) + bad + predict + infer(2))
            f = s.makefile("rb")
            answers = [read_response(f) for _ in range(6)]
        finally:
            s.close()
        assert [a[0] for a in answers] == [200, 200, 200, 400, 200, 200]
        assert json.loads(answers[0][2])["id"] == "r0" and json.loads(answers[2][2])["id"] == "r1"
        assert json.loads(answers[5][2])["id"] == "r2"
        assert json.loads(answers[1][2]) == {"live": True}
        got = np.array(json.loads(answers[4][2])["predictions"])
        assert np.allclose(got, want, atol=1e-5)
        text = srv.metrics_text()
        assert metric(text, "modelops_requests_total", endpoint="infer", code="200") == 3
        assert metric(text, "modelops_requests_total", endpoint="infer", code="400") == 1
        assert metric(text, "modelops_requests_in_flight") == 1  # only the scrape itself
    finally:
        assert srv.stop() == 0
