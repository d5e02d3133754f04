"""Unit tests of plugins/module_utils/packaging.py on real model files."""
import gzip
import json
import os
import pickle
import tarfile
import zipfile

import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from ansible_collections.modelops.serving.plugins.module_utils import packaging as pk

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
RUNTIME = os.path.join(ROOT, "runtime")


@pytest.fixture(scope="module")
def iris_model():
    data = load_iris()
    return LogisticRegression(max_iter=300).fit(data.data, data.target)


@pytest.fixture
def files(tmp_path, iris_model):
    out = {}
    out["pkl"] = tmp_path / "model.pkl"
    with open(out["pkl"], "wb") as handle:
        pickle.dump(iris_model, handle)
    out["joblib"] = tmp_path / "model.joblib"
    joblib.dump(iris_model, out["joblib"])
    out["joblib_z"] = tmp_path / "model-z.joblib"
    joblib.dump(iris_model, out["joblib_z"], compress=3)
    out["joblib_gz"] = tmp_path / "model.joblib.gz"
    joblib.dump(iris_model, out["joblib_gz"], compress=("gzip", 3))
    from skl2onnx import to_onnx

    onx = to_onnx(iris_model, load_iris().data[:1].astype("float32"))
    out["onnx"] = tmp_path / "model.onnx"
    out["onnx"].write_bytes(onx.SerializeToString())
    return out


@pytest.mark.parametrize("key", ["pkl", "joblib", "joblib_z", "joblib_gz"])
def test_scikit_learn_pickles_and_joblib_are_detected(files, key):
    assert pk.detect_framework(str(files[key])) == "sklearn"


def test_onnx_is_detected_by_content_not_name(files, tmp_path):
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(files["onnx"].read_bytes())
    assert pk.detect_framework(str(files["onnx"])) == "onnx"
    assert pk.detect_framework(str(renamed)) == "onnx"


def test_a_pickle_named_onnx_is_still_a_pickle(files, tmp_path):
    wrong = tmp_path / "model.onnx"
    wrong.write_bytes(files["pkl"].read_bytes())
    assert pk.detect_framework(str(wrong)) == "sklearn"


def test_truncated_onnx_is_reported_as_corrupt(files, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(files["onnx"].read_bytes()[:100])
    with pytest.raises(pk.PackagingError, match="broken.onnx.*not a valid ONNX model"):
        pk.detect_framework(str(broken))


def test_text_file_is_not_a_model(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not a model\n")
    with pytest.raises(pk.PackagingError, match="cannot tell the framework of .*notes.txt"):
        pk.detect_framework(str(text))


def test_empty_and_missing_files_are_named(tmp_path):
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(pk.PackagingError, match="empty.pkl is empty"):
        pk.detect_framework(str(empty))
    with pytest.raises(pk.PackagingError, match="does not exist"):
        pk.detect_framework(str(tmp_path / "nope.pkl"))


def test_pickle_of_a_non_sklearn_object_is_refused(tmp_path):
    class_free = tmp_path / "dict.pkl"
    class_free.write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=4))
    with pytest.raises(pk.PackagingError, match="references no Python classes"):
        pk.detect_framework(str(class_free))
    other = tmp_path / "other.pkl"
    import fractions

    other.write_bytes(pickle.dumps(fractions.Fraction(1, 3), protocol=4))
    with pytest.raises(pk.PackagingError, match="no scikit-learn class.*fractions"):
        pk.detect_framework(str(other))


def test_detection_never_executes_the_pickle(tmp_path):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch %s" % marker,))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(pk.PackagingError):
        pk.detect_framework(str(evil))
    assert not marker.exists()


def test_keras_and_torchscript_containers(tmp_path):
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    assert pk.detect_framework(str(h5)) == "keras"
    keras = tmp_path / "model.keras"
    with zipfile.ZipFile(keras, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("metadata.json", "{}")
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    assert pk.detect_framework(str(keras)) == "keras"
    ts = tmp_path / "model.pt"
    with zipfile.ZipFile(ts, "w") as archive:
        archive.writestr("model/data.pkl", b"\x80\x02.")
        archive.writestr("model/constants.pkl", b"\x80\x02.")
        archive.writestr("model/code/__torch__.py", "")
    assert pk.detect_framework(str(ts)) == "torchscript"
    ckpt = tmp_path / "checkpoint.pt"
    with zipfile.ZipFile(ckpt, "w") as archive:
        archive.writestr("checkpoint/data.pkl", b"\x80\x02.")
    with pytest.raises(pk.PackagingError, match="not TorchScript"):
        pk.detect_framework(str(ckpt))


def test_savedmodel_directory(tmp_path):
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"\x08\x01")
    assert pk.detect_framework(str(saved)) == "tensorflow"
    (tmp_path / "plain").mkdir()
    with pytest.raises(pk.PackagingError, match="without saved_model.pb"):
        pk.detect_framework(str(tmp_path / "plain"))


def test_requirement_groups_follow_the_framework():
    assert pk.requirement_groups("onnx") == ["base", "onnx"]
    assert pk.requirement_groups("sklearn") == ["base", "sklearn", "onnx", "convert"]
    assert pk.requirement_groups("sklearn", convert_to_onnx=False) == ["base", "sklearn", "onnx"]
    lines = pk.read_requirements(RUNTIME, "base")
    assert lines and all("==" in line for line in lines), "runtime requirements must be pinned"


def test_runtime_version_is_read_from_the_package():
    assert pk.runtime_version(RUNTIME)
    with pytest.raises(pk.PackagingError, match="not the modelops serving runtime"):
        pk.runtime_version(ROOT)


def test_validate_params_names_the_bad_field():
    good = {"name": "iris", "version": "1.0"}
    pk.validate_params(good)
    with pytest.raises(pk.PackagingError, match="name 'Iris Model'"):
        pk.validate_params(dict(good, name="Iris Model"))
    with pytest.raises(pk.PackagingError, match="version '1/2'"):
        pk.validate_params(dict(good, version="1/2"))
    with pytest.raises(pk.PackagingError, match="sample must be a dict"):
        pk.validate_params(dict(good, sample={"rows": []}))


def _fake_wheelhouse(tmp_path):
    wheels = tmp_path / "wheelhouse-set"
    wheels.mkdir(parents=True)
    (wheels / "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"numpy")
    (wheels / "requirements.lock").write_text("numpy==2.4.6\n")
    return wheels


def _context(tmp_path, files, name, **extra):
    params = {"model_path": str(files["joblib"]), "name": "iris", "version": "1", "base_image": "b:1"}
    params.update(extra)
    dest = tmp_path / name
    dest.mkdir()
    return pk.build_context(str(dest), params, "sklearn", RUNTIME, str(_fake_wheelhouse(tmp_path)))


def test_build_context_is_deterministic(tmp_path, files):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _context(tmp_path / "a", files, "ctx")
    second = _context(tmp_path / "b", files, "ctx")
    assert first["content_hash"] == second["content_hash"]
    assert first["model_files"] == {"model.joblib": pk.sha256_file(str(files["joblib"]))}
    ctx = tmp_path / "a" / "ctx"
    for required in ("Dockerfile", "options.json", "requirements/prepare.txt", "runtime/modelops_runtime/__init__.py",
                     "src/model.joblib", "healthcheck.py"):
        assert (ctx / required).exists(), required
    options = json.loads((ctx / "options.json").read_text())
    assert options["framework"] == "sklearn" and options["entrypoint"] == "model.joblib"


def test_content_hash_changes_with_any_input(tmp_path, files):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    base = _context(tmp_path / "a", files, "ctx")["content_hash"]
    other_version = _context(tmp_path / "b", files, "ctx", version="2")["content_hash"]
    other_base = _context(tmp_path / "c", files, "ctx", base_image="b:2")["content_hash"]
    assert len({base, other_version, other_base}) == 3


def test_dockerfile_installs_offline_only():
    assert "--no-index" in pk.DOCKERFILE
    assert "USER 10001" in pk.DOCKERFILE
    assert "pypi" not in pk.DOCKERFILE.lower()


def test_labels_carry_the_facts(tmp_path, files):
    (tmp_path / "a").mkdir()
    facts = _context(tmp_path / "a", files, "ctx")
    labels = pk.image_labels({"name": "iris", "version": "1", "resources": {"cpus": 2}}, "sklearn", facts, "0.1.0")
    assert labels[pk.CONTENT_HASH_LABEL] == facts["content_hash"]
    assert json.loads(labels["io.modelops.model.sha256"]) == facts["model_files"]
    assert labels["io.modelops.resources.cpus"] == "2"
    assert labels["org.opencontainers.image.version"] == "1"


def test_fill_wheelhouse_reports_pip_failures(tmp_path):
    class Proc:
        returncode = 1
        stdout = ""
        stderr = "ERROR: No matching distribution found for nothere==9"

    def runner(cmd, **_kw):
        assert "--only-binary=:all:" in cmd and "--python-version" in cmd
        return Proc()

    with pytest.raises(pk.PackagingError, match="No matching distribution found for nothere==9"):
        pk.fill_wheelhouse(str(tmp_path / "set"), ["nothere==9"], runner=runner)
    assert not (tmp_path / "set").exists()
    assert not (tmp_path / "set.part").exists()


def test_archive_image_id_reads_both_save_formats(tmp_path):
    for config, expected in (("abc123.json", "sha256:abc123"), ("blobs/sha256/def456", "sha256:def456")):
        path = tmp_path / ("%s.tar" % expected[7:])
        manifest = json.dumps([{"Config": config, "RepoTags": ["x:1"], "Layers": []}]).encode()
        with tarfile.open(path, "w") as tar:
            info = tarfile.TarInfo("manifest.json")
            info.size = len(manifest)
            import io

            tar.addfile(info, io.BytesIO(manifest))
        assert pk.archive_image_id(str(path)) == expected
    junk = tmp_path / "junk.tar"
    junk.write_bytes(gzip.compress(b"junk"))
    assert pk.archive_image_id(str(junk)) is None
