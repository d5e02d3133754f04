"""model_package refuses model files that would run code when loaded, before anything is built.

Real scikit-learn models with smuggled callables (runtime/tests/smuggle.py, shared with the
runtime's own tests), the real serving runtime directory, and a Docker client that fails the test
if anything touches it: a refusal must come before any wheel, build context or image work.
"""
import json
import os
import shutil
import sys
import zipfile

import pytest

from ansible_collections.modelops.serving.plugins.module_utils import packaging as pk

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
RUNTIME = os.path.join(ROOT, "runtime")
sys.path.insert(0, os.path.join(RUNTIME, "tests"))

from model_zoo import zoo  # noqa: E402  pylint: disable=wrong-import-position
from smuggle import FORGED_KINDS, dumps, payloads, smuggle  # noqa: E402  pylint: disable=wrong-import-position


class UntouchableEngine:
    """Stands where the Docker client goes: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError("the Docker engine was used (%s) for a model that must be refused first" % name)


@pytest.fixture(scope="module")
def models():
    return zoo()


def _params(tmp_path, model_path, **extra):
    params = {"model_path": str(model_path), "name": "evil", "version": "1", "runtime_dir": RUNTIME,
              "wheelhouse": str(tmp_path / "wheelhouse"), "wheelhouse_fill": True, "python_version": "3.11",
              "arch": "x86_64", "base_image": "modelops-python:bookworm", "convert_to_onnx": True}
    params.update(extra)
    (tmp_path / "wheelhouse").mkdir(exist_ok=True)
    return params


def _write(tmp_path, model, fmt="joblib", name="model.joblib"):
    path = tmp_path / name
    path.write_bytes(dumps(model, fmt))
    return path


@pytest.mark.parametrize("kind", list(payloads("/nonexistent")))
@pytest.mark.parametrize("fmt", ["joblib", "joblib-zlib", "pickle4"])
def test_package_refuses_smuggled_callables_before_any_build(tmp_path, models, kind, fmt):
    marker = tmp_path / "PWNED"
    payload, names = payloads(str(marker))[kind]
    where = "attribute" if kind in FORGED_KINDS else "object_array"
    path = _write(tmp_path, smuggle(models["lr"], payload, where), fmt)
    builds = tmp_path / "builds"
    builds.mkdir()
    for check_mode in (False, True):
        with pytest.raises(pk.PackagingError) as err:
            pk.package(_params(tmp_path, path), UntouchableEngine(), check_mode=check_mode, tmp_root=str(builds))
        message = str(err.value)
        assert str(path) in message and "evil:1" in message, message
        for name in names:
            assert name in message, (name, message)
        assert "trusted_globals" in message and "trust_pickle" in message
    assert os.listdir(builds) == [] and os.listdir(tmp_path / "wheelhouse") == []
    assert not marker.exists()


def test_the_issue_model_is_named_precisely(tmp_path, models):
    """A LogisticRegression saved with joblib, one extra attribute reducing to os.system('touch ...')."""
    marker = tmp_path / "PWNED"
    payload, _ = payloads(str(marker))["posix.system"]
    path = _write(tmp_path, smuggle(models["lr"], payload))
    framework, report = pk.inspect_model(str(path), RUNTIME)
    assert framework == "sklearn" and report.disallowed == ["posix.system"]
    with pytest.raises(pk.PackagingError, match=r"refusing to package evil:1: .*model\.joblib references a global "
                                                r"outside the allowlist .*: posix\.system"):
        pk.check_model_safety(str(path), framework, {"name": "evil", "version": "1"}, RUNTIME, report)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["pickle2", "pickle4", "pickle5", "joblib", "joblib-zlib", "joblib-gzip",
                                 "joblib-bz2", "joblib-xz", "joblib-lzma"])
def test_every_legitimate_model_still_packages(tmp_path, models, fmt):
    refused = {}
    for name, model in models.items():
        path = _write(tmp_path, model, fmt, name="%s.joblib" % name)
        framework, report = pk.inspect_model(str(path), RUNTIME)
        assert framework == "sklearn", name
        try:
            record, warnings = pk.check_model_safety(str(path), framework, {"name": name, "version": "1"}, RUNTIME, report)
        except pk.PackagingError as exc:
            refused[name] = str(exc)
            continue
        assert record["checked"] is True and not warnings
        assert any(g.startswith("sklearn.") for g in record["globals"])
    assert not refused, refused


def test_protocol_0_pickles_are_recognised_and_checked(tmp_path, models):
    import pickle

    path = tmp_path / "old.pkl"
    path.write_bytes(pickle.dumps(models["pipe"], protocol=0))
    framework, report = pk.inspect_model(str(path), RUNTIME)
    assert framework == "sklearn" and report.ok and report.protocol == 0


def test_trusted_globals_let_a_model_through_and_reach_the_build(tmp_path, models):
    from fractions import Fraction

    path = _write(tmp_path, smuggle(models["lr"], Fraction(1, 3)))
    with pytest.raises(pk.PackagingError, match=r"fractions\.Fraction"):
        pk.check_model_safety(str(path), "sklearn", {"name": "m", "version": "1"}, RUNTIME)
    params = {"name": "m", "version": "1", "trusted_globals": ["fractions.Fraction"]}
    record, warnings = pk.check_model_safety(str(path), "sklearn", params, RUNTIME)
    assert record["checked"] and record["trusted_globals"] == ["fractions.Fraction"] and not warnings
    wheels = tmp_path / "set"
    wheels.mkdir()
    (wheels / "x-1-py3-none-any.whl").write_bytes(b"x")
    contexts = {}
    for label, extra in (("plain", {}), ("trusted", {"trusted_globals": ["fractions.Fraction"]})):
        dest = tmp_path / label
        dest.mkdir()
        contexts[label] = pk.build_context(str(dest), dict({"model_path": str(path), "name": "m", "version": "1",
                                                            "base_image": "b:1"}, **extra),
                                           "sklearn", RUNTIME, str(wheels))
    options = json.loads((tmp_path / "trusted" / "options.json").read_text())
    assert options["trusted_globals"] == ["fractions.Fraction"]
    assert "trusted_globals" not in json.loads((tmp_path / "plain" / "options.json").read_text())
    assert contexts["plain"]["content_hash"] != contexts["trusted"]["content_hash"]


def test_trust_pickle_passes_with_a_loud_warning(tmp_path, models):
    marker = tmp_path / "PWNED"
    payload, _ = payloads(str(marker))["posix.system"]
    path = _write(tmp_path, smuggle(models["lr"], payload))
    record, warnings = pk.check_model_safety(str(path), "sklearn", {"name": "m", "version": "1", "trust_pickle": True},
                                             RUNTIME)
    assert record["trust_pickle"] is True and record["checked"] is False
    assert len(warnings) == 1 and "NOT checked" in warnings[0] and "posix.system" in warnings[0]
    assert not marker.exists()


def test_trust_options_belong_to_their_formats(tmp_path, models):
    path = _write(tmp_path, models["lr"])
    with pytest.raises(pk.PackagingError, match="trust_model_code applies to Keras"):
        pk.check_model_safety(str(path), "sklearn", {"name": "m", "version": "1", "trust_model_code": True}, RUNTIME)
    with pytest.raises(pk.PackagingError, match="trusted_globals and trust_pickle apply to scikit-learn"):
        pk.check_model_safety(str(path), "onnx", {"name": "m", "version": "1", "trusted_globals": ["a.b"]}, RUNTIME)
    with pytest.raises(pk.PackagingError, match="trusted_globals: 'system' is not a global"):
        pk.check_model_safety(str(path), "sklearn", {"name": "m", "version": "1", "trusted_globals": ["system"]}, RUNTIME)


def test_the_runtime_directory_is_the_one_source_of_the_checks(tmp_path, models):
    """The packager runs the runtime's own scanner and allowlist: change the runtime, the verdict follows."""
    marker = tmp_path / "PWNED"
    payload, _ = payloads(str(marker))["posix.system"]
    path = _write(tmp_path, smuggle(models["lr"], payload))
    copy = tmp_path / "runtime"
    shutil.copytree(RUNTIME, str(copy), ignore=shutil.ignore_patterns("tests", "__pycache__"))
    with open(str(copy / "modelops_runtime" / "allowlist" / "local.txt"), "w") as handle:
        handle.write("posix.system\n")
    record, _ = pk.check_model_safety(str(path), "sklearn", {"name": "m", "version": "1"}, str(copy))
    assert record["checked"] and "posix.system" in record["globals"]
    with pytest.raises(pk.PackagingError, match="posix.system"):
        pk.check_model_safety(str(path), "sklearn", {"name": "m", "version": "1"}, RUNTIME)
    old = tmp_path / "old-runtime"
    shutil.copytree(str(copy), str(old))
    os.remove(str(old / "modelops_runtime" / "picklescan.py"))
    with pytest.raises(pk.PackagingError, match="has no picklescan.py"):
        pk.inspect_model(str(path), str(old))


def _keras(tmp_path, layers):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(str(path), "w") as archive:
        archive.writestr("config.json", json.dumps({"module": "keras", "class_name": "Sequential",
                                                    "config": {"layers": layers}}))
        archive.writestr("metadata.json", "{}")
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    return path


def test_keras_lambda_layers_are_refused_unless_trusted(tmp_path):
    lam = {"module": "keras.layers", "class_name": "Lambda", "config": {"name": "double", "function": {
        "class_name": "__lambda__", "config": {"code": "4wEAAA"}}}}
    path = _keras(tmp_path, [lam])
    assert pk.detect_framework(str(path), RUNTIME) == "keras"
    with pytest.raises(pk.PackagingError, match=r"refusing to package m:1: .*Lambda 'double'.*trust_model_code"):
        pk.package(_params(tmp_path, path, name="m"), UntouchableEngine(), tmp_root=str(tmp_path))
    record, warnings = pk.check_model_safety(str(path), "keras", {"name": "m", "version": "1", "trust_model_code": True},
                                             RUNTIME)
    assert record["trust_model_code"] and "Lambda" in record["problems"][0] and "Lambda" in warnings[0]


def test_savedmodel_and_torchscript_are_checked(tmp_path):
    saved = tmp_path / "saved"
    saved.mkdir()
    # SavedModel{meta_graphs{graph_def{library{function{signature{name: "serve"} node_def{name: "p" op: "PyFunc"}}}}}}
    node = b"\x0a\x01p\x12\x06PyFunc"
    function = b"\x0a\x07\x0a\x05serve" + b"\x1a" + bytes([len(node)]) + node
    library = b"\x0a" + bytes([len(function)]) + function
    graph = b"\x12" + bytes([len(library)]) + library
    meta = b"\x12" + bytes([len(graph)]) + graph
    (saved / "saved_model.pb").write_bytes(b"\x08\x01\x12" + bytes([len(meta)]) + meta)
    assert pk.detect_framework(str(saved), RUNTIME) == "tensorflow"
    with pytest.raises(pk.PackagingError, match="PyFunc calls back into Python"):
        pk.check_model_safety(str(saved), "tensorflow", {"name": "m", "version": "1"}, RUNTIME)
    ts = tmp_path / "model.pt"
    with zipfile.ZipFile(str(ts), "w") as archive:
        archive.writestr("model/data.pkl", b"\x80\x02.")
        archive.writestr("model/constants.pkl", b"\x80\x02.")
        archive.writestr("model/code/__torch__.py", 'def forward(self, x):\n  t = torch.from_file("/etc/shadow")\n')
    assert pk.detect_framework(str(ts), RUNTIME) == "torchscript"
    with pytest.raises(pk.PackagingError, match="from_file"):
        pk.check_model_safety(str(ts), "torchscript", {"name": "m", "version": "1"}, RUNTIME)


def test_onnx_models_reading_external_files_are_refused(tmp_path):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])], [weights])
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    assert pk.detect_framework(str(path), RUNTIME) == "onnx"
    record, warnings = pk.check_model_safety(str(path), "onnx", {"name": "m", "version": "1"}, RUNTIME)
    assert record["checked"] is True and not warnings
    tensor = onx.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "etc/passwd"
    path.write_bytes(onx.SerializeToString())
    with pytest.raises(pk.PackagingError, match=r"external file \('etc/passwd'\)"):
        pk.package(_params(tmp_path, path, name="m"), UntouchableEngine(), tmp_root=str(tmp_path))
