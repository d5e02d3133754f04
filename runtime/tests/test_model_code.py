"""Keras, SavedModel and TorchScript at the same bar as pickles: what could run code is refused.

The first part needs nothing heavy: the checks read the formats with the standard library, so
they are tested on files laid out byte for byte as Keras, TensorFlow and torch write them. The
second part (marked heavy) makes real models with tensorflow/keras/torch and runs them through
prepare and the loaders.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest

from modelops_runtime import formatscan, loaders
from modelops_runtime.prepare import PrepareError, prepare

# ------------------------------------------------------------------------------ Keras


def _keras_file(path, layers):
    config = {"module": "keras", "class_name": "Sequential", "config": {"name": "seq", "layers": layers},
              "registered_name": None}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    return path


DENSE = {"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense", "units": 3},
         "registered_name": None}
LAMBDA = {"module": "keras.layers", "class_name": "Lambda",
          "config": {"name": "double", "function": {"class_name": "__lambda__",
                                                    "config": {"code": "4wEAAAAAAAAA", "defaults": None}}},
          "registered_name": None}


def test_keras_lambda_layers_are_refused(tmp_path):
    assert formatscan.check_keras(_keras_file(tmp_path / "ok.keras", [DENSE])).ok
    report = formatscan.check_keras(_keras_file(tmp_path / "lambda.keras", [LAMBDA, DENSE]))
    assert not report.ok and "Lambda 'double'" in report.message() and "trust_model_code" in report.message()


@pytest.mark.parametrize("layer,why", [
    ({"module": "os", "class_name": "system", "config": "touch /tmp/x"}, "os.system is imported"),
    ({"module": "keras.utils", "class_name": "get_file", "config": {"origin": "http://x"}}, "keras.utils.get_file"),
    ({"module": "keras.layers", "class_name": "TFSMLayer", "config": {"filepath": "/etc"}}, "loads another model"),
])
def test_keras_configs_naming_code_outside_keras_are_refused(tmp_path, layer, why):
    report = formatscan.check_keras(_keras_file(tmp_path / "m.keras", [DENSE, layer]))
    assert not report.ok and why in report.message()


def test_keras_h5_is_searched_without_h5py(tmp_path):
    """On a controller without h5py the model_config attribute's JSON is found in the file's bytes."""
    try:
        import h5py  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("h5py is installed: the config is read with it (see the heavy tests)")
    config = json.dumps({"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Lambda", "config": {"name": "l", "function": {"class_name": "__lambda__", "config": {}}}}]}})
    path = tmp_path / "m.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 512 + config.encode() + b"\0" * 64)
    report = formatscan.check_keras(path)
    assert not report.ok and "Lambda" in report.message() and "byte search" in report.details["config"]
    plain = tmp_path / "p.h5"
    plain.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 512 + json.dumps({"class_name": "Dense"}).encode())
    assert formatscan.check_keras(plain).ok


# ------------------------------------------------------------------------------ SavedModel (protobuf made by hand)


def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field, payload):
    payload = payload.encode() if isinstance(payload, str) else payload
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _node(name, op, f=None, attrs=None):
    out = _ld(1, name) + _ld(2, op)
    if f:
        out += _ld(5, _ld(1, "f") + _ld(2, _ld(10, _ld(1, f))))
    for key, text in (attrs or {}).items():
        out += _ld(5, _ld(1, key) + _ld(2, _ld(2, text)))
    return out


def _function(name, *nodes):
    return _ld(1, _ld(1, _ld(1, name)) + b"".join(_ld(3, n) for n in nodes))


def _savedmodel(directory, serve_nodes, saver_nodes=(_node("save", "SaveV2"), _node("restore", "RestoreV2")),
                extra_functions=b""):
    graph = (_ld(1, _node("StatefulPartitionedCall", "StatefulPartitionedCall", f="serve"))
             + _ld(1, _node("saver_call", "StatefulPartitionedCall", f="traced_save"))
             + _ld(2, _function("serve", *serve_nodes) + _function("traced_save", *saver_nodes) + extra_functions))
    saver = _ld(1, "saver_filename:0") + _ld(2, "saver_call:0") + _ld(3, "saver_call")
    objects = _ld(2, _ld(1, "serve") + _ld(2, b""))
    meta = _ld(2, graph) + _ld(3, saver) + _ld(7, objects)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "saved_model.pb"), "wb") as handle:
        handle.write(_varint(1 << 3) + _varint(1) + _ld(2, meta))
    return directory


def test_savedmodel_plain_graph_with_its_saver_passes(tmp_path):
    report = formatscan.check_savedmodel(_savedmodel(tmp_path / "sm", [_node("m", "MatMul"), _node("p", "PrintV2")]))
    assert report.ok, report.problems
    assert report.details["saver_functions"] == ["traced_save"]


@pytest.mark.parametrize("node,why", [
    (_node("py", "PyFunc"), "PyFunc calls back into Python"),
    (_node("py", "EagerPyFunc"), "EagerPyFunc calls back into Python"),
    (_node("w", "WriteFile"), "WriteFile writes files"),
    (_node("s", "SaveV2"), "SaveV2 writes files"),
    (_node("r", "ReadFile"), "ReadFile reads files by path"),
    (_node("p", "PrintV2", attrs={"output_stream": "file:///tmp/out"}), "PrintV2 writes to file:///tmp/out"),
    (_node("d", "DataServiceDatasetV4"), "talks to other processes"),
])
def test_savedmodel_ops_that_run_code_or_touch_files_are_refused(tmp_path, node, why):
    report = formatscan.check_savedmodel(_savedmodel(tmp_path / "sm", [_node("m", "MatMul"), node]))
    assert not report.ok and why in report.message() and "function serve" in report.message()


def test_saver_ops_are_allowed_only_in_functions_nothing_else_calls(tmp_path):
    called = _savedmodel(tmp_path / "sm", [_node("m", "MatMul"), _node("c", "PartitionedCall", f="traced_save")])
    report = formatscan.check_savedmodel(called)
    assert not report.ok and "SaveV2 writes files (in function traced_save)" in report.message()


def test_savedmodel_text_format_is_not_trusted(tmp_path):
    (tmp_path / "saved_model.pbtxt").write_text('meta_graphs { graph_def { node { op: "MatMul" } } }')
    assert "pbtxt" in formatscan.check_savedmodel(tmp_path).message()


# ------------------------------------------------------------------------------ TorchScript (archive laid out as torch writes it)


def _torchscript(code):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("model/data.pkl", b"\x80\x02.")
        archive.writestr("model/constants.pkl", b"\x80\x02.")
        archive.writestr("model/code/__torch__.py", code)
        archive.writestr("model/version", "3\n")
    return buf.getvalue()


LINEAR = ("class Net(Module):\n  def forward(self: __torch__.Net, x: Tensor) -> Tensor:\n"
          "    return torch.linear(x, self.weight, self.bias)\n")


def test_torchscript_operators_that_reach_files_or_processes_are_refused():
    assert formatscan.check_torchscript(_torchscript(LINEAR)).ok
    reading = LINEAR.replace("return", 't = torch.from_file("/etc/shadow", False, 4, dtype=0)\n    return')
    assert "from_file" in formatscan.check_torchscript(_torchscript(reading)).message()
    collective = LINEAR.replace("return", "_0 = ops.c10d.allreduce_([x], None, None, -1)\n    return")
    assert "torch.ops.c10d" in formatscan.check_torchscript(_torchscript(collective)).message()
    quantized = LINEAR.replace("torch.linear(x, self.weight, self.bias)", "ops.quantized.linear(x, self._packed, 1.0, 0)")
    assert formatscan.check_torchscript(_torchscript(quantized)).ok
    submodule = LINEAR.replace("torch.linear(x, self.weight, self.bias)", "self.ops.layer.forward(x)")
    assert formatscan.check_torchscript(_torchscript(submodule)).ok
    spelled_out = LINEAR.replace("return", "_1 = torch.ops.debugprims.load_tensor(\"t\", [1], [1], dtype=6)\n    return")
    assert "torch.ops.debugprims" in formatscan.check_torchscript(_torchscript(spelled_out)).message()


def _onnx_with_external_data(location):
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    if location:
        tensor = model.graph.initializer[0]
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", "48")):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return model.SerializeToString()


def test_onnx_external_data_is_refused_whatever_the_trust(tmp_path, monkeypatch):
    """Loaded from bytes, ONNX Runtime reads external data relative to the working directory."""
    import onnxruntime as ort

    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret").write_bytes(b"s3cr3t-bytes-that-become-weights-0123456789abcd"[:48].ljust(48, b"!"))
    evil = _onnx_with_external_data("secret")
    ort.InferenceSession(evil, providers=["CPUExecutionProvider"])  # positive control: it does load the file
    assert formatscan.check_onnx(_onnx_with_external_data(None)).ok
    report = formatscan.check_onnx(evil)
    assert not report.ok and "initializer 'W' keeps its data in an external file ('secret')" in report.message()
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(evil)
    with pytest.raises(PrepareError, match="external file"):
        prepare(src, {"name": "m", "version": "1", "framework": "onnx", "entrypoint": "model.onnx",
                      "sample": {"instances": [[1, 2, 3, 4]]}}, tmp_path / "out", log=lambda m: None)


def test_trust_model_code_only_for_the_formats_it_covers(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"\x08\x07")
    with pytest.raises(PrepareError, match="trust_model_code applies to Keras"):
        prepare(src, {"name": "m", "version": "1", "framework": "onnx", "entrypoint": "model.onnx",
                      "trust_model_code": True}, tmp_path / "out", log=lambda m: None)
    with pytest.raises(PrepareError, match="apply to scikit-learn"):
        prepare(src, {"name": "m", "version": "1", "framework": "onnx", "entrypoint": "model.onnx",
                      "trusted_globals": ["a.b"]}, tmp_path / "out", log=lambda m: None)


# ------------------------------------------------------------------------------ real models (heavy)

X = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return pytest.importorskip("tensorflow", reason="tensorflow-cpu not installed (requirements-heavy.txt)")


def _opts(entry, framework, **extra):
    opts = {"name": "m", "version": "1", "framework": framework, "entrypoint": entry, "sample": {"instances": X.tolist()}}
    opts.update(extra)
    return opts


@pytest.mark.heavy
@pytest.mark.parametrize("filename", ["model.keras", "model.h5"])
def test_real_keras_lambda_needs_trust_model_code(tmp_path, filename):
    _tf()
    import keras

    marker = tmp_path / "lambda-ran"
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Lambda(lambda t: t * 2.0), keras.layers.Dense(3)])
    src = tmp_path / "src"
    src.mkdir()
    model.save(src / filename)
    with pytest.raises(PrepareError, match="Lambda") as err:
        prepare(src, _opts(filename, "keras"), tmp_path / "refused", log=lambda m: None)
    assert filename in str(err.value) and "trust_model_code" in str(err.value)
    m = prepare(src, _opts(filename, "keras", trust_model_code=True), tmp_path / "out", log=lambda m: None)
    assert m["safety"]["trust_model_code"] is True and m["safety"]["check"]["safe_mode"] is False
    served = loaders.load_served(tmp_path / "out", m)
    assert served.predict({"input": X})["output"].shape == (2, 3)
    m["safety"]["trust_model_code"] = False
    with pytest.raises(loaders.UnsafeModelError, match="Lambda"):
        loaders.load_served(tmp_path / "out", m)
    assert not marker.exists()


@pytest.mark.heavy
def test_real_keras_model_loads_in_safe_mode(tmp_path):
    _tf()
    import keras

    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(3, activation="softmax")])
    src = tmp_path / "src"
    src.mkdir()
    model.save(src / "model.keras")
    m = prepare(src, _opts("model.keras", "keras"), tmp_path / "out", log=lambda m: None)
    assert m["safety"]["check"]["safe_mode"] is True and m["safety"]["check"]["problems"] == []


@pytest.mark.heavy
def test_real_savedmodel_writing_files_or_calling_python_is_refused(tmp_path):
    tf = _tf()
    written = tmp_path / "WRITTEN"

    class Writes(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x):
            tf.io.write_file(str(written), tf.strings.as_string(tf.reduce_sum(x)))
            return {"y": x * 2.0}

    class CallsPython(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x):
            return {"y": tf.py_function(lambda a: a * 2, [x], tf.float32)}

    class Plain(tf.Module):
        def __init__(self):
            self.w = tf.Variable(2.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x):
            return {"y": x * self.w}

    for cls, why in ((Writes, "WriteFile writes files"), (CallsPython, "EagerPyFunc calls back into Python")):
        mod = cls()
        tf.saved_model.save(mod, str(tmp_path / cls.__name__ / "saved"), signatures={"serving_default": mod.serve})
        with pytest.raises(PrepareError, match=why):
            prepare(tmp_path / cls.__name__, _opts("saved", "tensorflow"), tmp_path / ("out-" + cls.__name__),
                    log=lambda m: None)
    assert not written.exists()
    mod = Plain()
    tf.saved_model.save(mod, str(tmp_path / "plain" / "saved"), signatures={"serving_default": mod.serve})
    m = prepare(tmp_path / "plain", _opts("saved", "tensorflow"), tmp_path / "out", log=lambda m: None)
    assert m["safety"]["check"]["problems"] == [] and m["safety"]["check"]["saver_functions"]
    assert loaders.load_served(tmp_path / "out", m).predict({"x": X})["y"].shape == (2, 4)


@pytest.mark.heavy
def test_real_torchscript_reading_files_is_refused(tmp_path):
    torch = pytest.importorskip("torch", reason="torch not installed (requirements-heavy.txt)")
    secret = tmp_path / "secret"
    secret.write_bytes(b"0123456789abcdef")

    class Reads(torch.nn.Module):
        def __init__(self, path: str):
            super().__init__()
            self.path = path

        def forward(self, x):
            leak = torch.from_file(self.path, False, 4, dtype=torch.uint8)
            return x + leak.to(x.dtype).sum()

    src = tmp_path / "src"
    src.mkdir()
    torch.jit.script(Reads(str(secret))).save(str(src / "model.pt"))
    with pytest.raises(PrepareError, match="from_file"):
        prepare(src, _opts("model.pt", "torchscript"), tmp_path / "refused", log=lambda m: None)
    torch.jit.script(torch.nn.Linear(4, 3)).save(str(src / "linear.pt"))
    m = prepare(src, _opts("linear.pt", "torchscript"), tmp_path / "out", log=lambda m: None)
    assert m["safety"]["check"]["problems"] == []
