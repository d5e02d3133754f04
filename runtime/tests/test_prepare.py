"""prepare: loading, conversion decision, reference stats, sample checks, manifest contents."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import FEATURES, RUNTIME_DIR, make_model_dir, write_source

from modelops_runtime import loaders
from modelops_runtime import manifest as mf
from modelops_runtime.prepare import PrepareError, prepare


def run_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(RUNTIME_DIR))
    return subprocess.run([sys.executable, "-m", "modelops_runtime", *args], capture_output=True, text=True, env=env, timeout=120)


def test_sklearn_converted_to_onnx_when_identical(tmp_path, iris, iris_lr):
    X, _ = iris
    out, m = make_model_dir(tmp_path, iris_lr, X)
    assert m["framework"] == "onnx" and m["original_framework"] == "sklearn"
    assert m["conversion"]["attempted"] and m["conversion"]["used"]
    assert "identical" in m["conversion"]["reason"]
    assert m["entrypoint"] == "converted/model.onnx"
    assert (out / "original" / "model.joblib").is_file()
    # every file is listed with its real hash
    assert set(m["files"]) == {"converted/model.onnx", "original/model.joblib"}
    for rel, digest in m["files"].items():
        assert mf.sha256_file(out / rel) == digest
    assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in m["outputs"]] == ["label", "probabilities"]
    assert m["outputs"][1]["shape"] == [-1, 3]
    # the served ONNX model gives the same labels as the sklearn model on all rows
    model = loaders.load_served(out, m)
    got = model.predict({"input": X.astype(np.float32)})["label"]
    assert np.array_equal(got, iris_lr.predict(X))


def test_manifest_is_deterministic(tmp_path, iris, iris_lr):
    X, _ = iris
    _, m1 = make_model_dir(tmp_path / "a", iris_lr, X)
    _, m2 = make_model_dir(tmp_path / "b", iris_lr, X)
    assert mf.dumps(m1) == mf.dumps(m2)
    text = (tmp_path / "a" / "model" / "manifest.json").read_text()
    assert text == mf.dumps(m1)
    assert "created_at" not in m1


def test_manifest_has_required_keys(onnx_model_dir):
    m = json.loads((onnx_model_dir / "manifest.json").read_text())
    for key in ("schema_version", "name", "version", "framework", "original_framework", "entrypoint", "files",
                "inputs", "outputs", "reference", "sample", "conversion", "runtime_version", "runtime", "created_by"):
        assert key in m, key
    assert m["runtime"]["workers"] == 1


def test_pickle_without_conversion(tmp_path, iris, iris_lr):
    X, _ = iris
    out, m = make_model_dir(tmp_path, iris_lr, X, kind="pickle", convert_to_onnx=False)
    assert m["framework"] == "sklearn"
    assert m["conversion"] == {"attempted": False, "used": False, "reason": "convert_to_onnx is false"}
    assert m["entrypoint"] == "original/model.pkl"
    assert m["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    model = loaders.load_served(out, m)
    assert np.array_equal(model.predict({"input": X})["label"], iris_lr.predict(X))


def test_no_check_data_keeps_sklearn(tmp_path, iris, iris_lr):
    X, _ = iris
    _, m = make_model_dir(tmp_path, iris_lr, X, reference=None, sample=False)
    assert m["framework"] == "sklearn"
    assert m["conversion"]["attempted"] is True and m["conversion"]["used"] is False
    assert "no reference data or sample" in m["conversion"]["reason"]
    assert m["reference"] is None


def test_conversion_mismatch_keeps_sklearn(tmp_path, iris):
    """A model whose ONNX predictions differ in float32 and float64 stays on sklearn, with the reason."""
    from sklearn.linear_model import LinearRegression

    X, y = iris
    rng = np.random.default_rng(0)
    Xr = X * 1e3 + rng.normal(size=X.shape)
    reg = LinearRegression().fit(Xr, y * 1e5 + Xr[:, 0] * 3.3)
    src = tmp_path / "src"
    write_source(src, reg, Xr, reference="npy")
    opts = {"name": "reg", "version": "1", "framework": "sklearn", "entrypoint": "model.joblib", "reference_data": "reference.npy"}
    m = prepare(src, opts, tmp_path / "model", log=lambda _: None)
    conv = m["conversion"]
    assert conv["attempted"] is True
    model = loaders.load_served(tmp_path / "model", m)
    dtype = np.float32 if m["inputs"][0]["datatype"] == "FP32" else np.float64
    got = model.predict({"input": Xr.astype(dtype)})["prediction"].reshape(-1)
    if conv["used"]:
        # kept only because it was exactly equal
        assert np.array_equal(got, reg.predict(Xr))
    else:
        assert m["framework"] == "sklearn" and "differs" in conv["reason"]
        assert np.array_equal(got, reg.predict(Xr))


def test_onnx_source(tmp_path, iris, iris_lr):
    from skl2onnx import to_onnx

    X, _ = iris
    onx = to_onnx(iris_lr, X[:1].astype(np.float32), options={id(iris_lr): {"zipmap": False}})
    src = tmp_path / "src"
    src.mkdir()
    (src / "iris.onnx").write_bytes(onx.SerializeToString())
    opts = {"name": "iris-onnx", "version": "7", "framework": "onnx", "entrypoint": "iris.onnx",
            "sample": {"instances": X[:2].tolist(), "expected": iris_lr.predict(X[:2]).tolist()}}
    m = prepare(src, opts, tmp_path / "model", log=lambda _: None)
    assert m["framework"] == "onnx" and m["original_framework"] == "onnx"
    assert m["conversion"]["attempted"] is False
    assert m["inputs"][0]["datatype"] == "FP32" and m["inputs"][0]["shape"] == [-1, 4]
    assert m["entrypoint"] == "original/iris.onnx"
    assert m["reference"] is None and "no reference_data" in m["drift_note"]


def test_reference_statistics(tmp_path, iris, iris_lr):
    X, _ = iris
    _, m = make_model_dir(tmp_path, iris_lr, X)
    ref = m["reference"]
    assert [f["name"] for f in ref["features"]] == FEATURES
    assert ref["rows"] == 150 and ref["bins"] == 10
    for f in ref["features"]:
        assert f["edges"] == sorted(f["edges"])
        assert len(f["proportions"]) == len(f["edges"]) + 1
        assert abs(sum(f["proportions"]) - 1.0) < 1e-9
        # quantile bins: no bin holds much more than its share (ties allowed)
        assert max(f["proportions"]) < 0.35


def test_npy_reference_names_features_by_index(tmp_path, iris, iris_lr):
    X, _ = iris
    _, m = make_model_dir(tmp_path, iris_lr, X, reference="npy")
    assert [f["name"] for f in m["reference"]["features"]] == ["f0", "f1", "f2", "f3"]


def test_sample_mismatch_fails_with_clear_message(tmp_path, iris, iris_lr):
    X, _ = iris
    src = tmp_path / "src"
    entry = write_source(src, iris_lr, X)
    opts = {"name": "iris", "version": "1", "framework": "sklearn", "entrypoint": entry,
            "sample": {"instances": [X[0].tolist()], "expected": [2]}}
    (tmp_path / "options.json").write_text(json.dumps(opts))
    res = run_cli("prepare", "--source", str(src), "--options", str(tmp_path / "options.json"), "--out", str(tmp_path / "model"))
    assert res.returncode != 0
    assert "sample output [0] != expected [2]" in res.stderr
    assert not (tmp_path / "model" / "manifest.json").exists()


def test_sample_within_tolerance(tmp_path, iris, iris_lr):
    X, _ = iris
    proba = iris_lr.predict_proba(X[:2])
    sample = {"instances": X[:2].tolist(), "expected": (proba + 1e-4).tolist(), "tolerance": 1e-3, "output": "probabilities"}
    src = tmp_path / "src"
    entry = write_source(src, iris_lr, X)
    opts = {"name": "iris", "version": "1", "framework": "sklearn", "entrypoint": entry, "reference_data": "reference.csv",
            "sample": sample}
    m = prepare(src, opts, tmp_path / "model", log=lambda _: None)
    assert m["sample"]["tolerance"] == 1e-3
    sample["tolerance"] = 1e-6
    with pytest.raises(PrepareError, match=r"sample output .* != expected .*tolerance 1e-06"):
        prepare(src, opts, tmp_path / "model2", log=lambda _: None)


def test_corrupt_file_names_file_and_framework(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.joblib").write_bytes(b"this is not a pickle at all\x00\x01")
    (tmp_path / "options.json").write_text(json.dumps(
        {"name": "broken", "version": "1", "framework": "sklearn", "entrypoint": "model.joblib"}))
    res = run_cli("prepare", "--source", str(src), "--options", str(tmp_path / "options.json"), "--out", str(tmp_path / "model"))
    assert res.returncode == 2
    assert "model.joblib" in res.stderr and "sklearn" in res.stderr


def test_wrong_framework_is_refused(tmp_path, iris, iris_lr):
    X, _ = iris
    src = tmp_path / "src"
    write_source(src, iris_lr, X)
    opts = {"name": "x", "version": "1", "framework": "onnx", "entrypoint": "model.joblib"}
    with pytest.raises(PrepareError, match=r"onnx model model.joblib: cannot load model.joblib as an ONNX model"):
        prepare(src, opts, tmp_path / "model", log=lambda _: None)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"name": None}, "'name' is required"),
        ({"framework": "xgboost"}, "framework 'xgboost' is not one of"),
        ({"entrypoint": "../etc/passwd"}, "must be a relative path inside --source"),
        ({"runtime": {"workers": 0}}, "workers"),
        ({"runtime": {"no_such_option": 1}}, "unknown runtime option"),
        ({"sample": {"instances": []}}, "sample.instances"),
        ({"version": "1/2"}, "version"),
    ],
)
def test_options_are_validated(tmp_path, iris, iris_lr, bad, match):
    X, _ = iris
    src = tmp_path / "src"
    entry = write_source(src, iris_lr, X)
    opts = {"name": "iris", "version": "1", "framework": "sklearn", "entrypoint": entry}
    opts.update(bad)
    with pytest.raises(PrepareError, match=match):
        prepare(src, opts, tmp_path / "model", log=lambda _: None)


def test_runtime_options_recorded(tmp_path, iris, iris_lr):
    X, _ = iris
    _, m = make_model_dir(tmp_path, iris_lr, X, runtime={"workers": 2, "cache_size": 50}, drift_window=200,
                          created_at="2026-01-01T00:00:00Z")
    assert m["runtime"]["workers"] == 2 and m["runtime"]["cache_size"] == 50 and m["runtime"]["drift_window"] == 200
    assert m["created_at"] == "2026-01-01T00:00:00Z"


def test_verify_cli_detects_tampering(tmp_path, iris, iris_lr):
    X, _ = iris
    out, _ = make_model_dir(tmp_path, iris_lr, X)
    ok = run_cli("verify", "--model-dir", str(out))
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    with open(out / "original" / "model.joblib", "ab") as fh:
        fh.write(b"x")
    bad = run_cli("verify", "--model-dir", str(out))
    assert bad.returncode == 3
    assert "checksum mismatch for original/model.joblib" in json.loads(bad.stdout)["error"]


def test_sklearn_single_pass_labels_are_checked(tmp_path, iris, iris_lr):
    """For estimators that predict the most probable class, labels come from one predict_proba pass."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    X, y = iris
    out, m = make_model_dir(tmp_path / "lr", iris_lr, X, convert_to_onnx=False)
    assert m["sklearn"]["label_from_probabilities"] is True
    model = loaders.load_served(out, m)
    assert model.label_from_proba
    res = model.predict({"input": X})
    assert np.array_equal(res["label"], iris_lr.predict(X))
    assert np.allclose(res["probabilities"], iris_lr.predict_proba(X))
    # calibrated probabilities may disagree with the wrapped predict(): never used
    svc = CalibratedClassifierCV(SVC(), ensemble=False).fit(X, y)
    _, m2 = make_model_dir(tmp_path / "svc", svc, X, convert_to_onnx=False)
    assert m2["sklearn"]["label_from_probabilities"] is False
    assert "not known to predict the most probable class" in m2["sklearn"]["reason"]
