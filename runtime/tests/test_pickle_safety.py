"""Pickle safety: model files that run code when loaded are refused before anything is unpickled.

Real scikit-learn models with smuggled callables of several kinds (os.system, posix.system,
subprocess.Popen, eval, exec, a dotted name through an allowed module, numpy's ufunc
reconstructor, getattr(__import__(...))), placed after joblib's inline arrays, inside object-dtype
arrays (joblib's nested pickles) and inside pipeline steps, written as plain pickles and as joblib
files (uncompressed, zlib, gzip, bz2, xz, lzma). Each is refused by the scanner, by the loader, by
prepare and by a running server, with the offending names and the file in the message, and a
marker file proves that nothing ran. Positive controls prove that each payload does run under a
plain joblib.load. Legitimate models of many kinds pass, and the scanner reports exactly the
globals the real unpickler imports.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import random
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
from conftest import RUNTIME_DIR, make_model_dir, start_server, wait_for
from model_zoo import zoo
from smuggle import FORGED_KINDS, FORMATS, PROTOCOL4_KINDS, Call, Forged, dumps, payloads, smuggle

from modelops_runtime import loaders, picklescan
from modelops_runtime import manifest as mf
from modelops_runtime.prepare import PrepareError, prepare

KINDS = list(payloads("/nonexistent"))
ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


@pytest.fixture(scope="module")
def models():
    return zoo()


def _cases():
    for kind in KINDS:
        for where in ("attribute", "object_array", "step"):
            if where == "object_array" and kind in FORGED_KINDS:
                continue
            for fmt in FORMATS:
                if kind in PROTOCOL4_KINDS and fmt == "pickle2":
                    continue
                yield kind, where, fmt


CASES = list(_cases())


def _evil(models, marker, kind, where):
    base = models["pipe"] if where == "step" else models["lr"]
    payload, names = payloads(str(marker))[kind]
    return smuggle(base, payload, where), names


def _wait_absent(marker: Path, kind: str = "subprocess.Popen") -> bool:
    if kind == "subprocess.Popen":
        time.sleep(0.5)  # a started child would create it asynchronously
    return not marker.exists()


# ------------------------------------------------------------------------------ positive controls


@pytest.mark.parametrize("kind", KINDS)
def test_each_payload_really_runs_under_plain_joblib_load(tmp_path, models, kind):
    """The files below are real attacks: joblib.load runs them (which is why they must be refused)."""
    for where in ("attribute", "object_array"):
        if where == "object_array" and kind in FORGED_KINDS:
            continue
        marker = tmp_path / ("ran-" + where)
        evil, _ = _evil(models, marker, kind, where)
        joblib.load(io.BytesIO(dumps(evil, "joblib")))
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"{kind} in {where} did not run: the test payload is broken"


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("kind,where,fmt", CASES, ids=["-".join(c) for c in CASES])
def test_smuggled_callables_are_refused_by_the_scanner_and_the_loader(tmp_path, models, kind, where, fmt):
    marker = tmp_path / "PWNED"
    evil, names = _evil(models, marker, kind, where)
    data = dumps(evil, fmt)
    report = picklescan.scan_bytes(data, name="model.joblib")
    assert not report.ok
    for name in names:
        assert name in report.disallowed, (name, report.disallowed, report.problem)
        assert name in report.message()
    assert "model.joblib" in report.message()
    with pytest.raises(loaders.UnsafeModelError) as err:
        loaders._unpickle_sklearn(data, "original/model.joblib", loaders.Trust())
    for name in names:
        assert name in str(err.value)
    assert "original/model.joblib" in str(err.value)
    assert _wait_absent(marker, kind)


def _genops_globals(data: bytes) -> set:
    """What a pickletools.genops walk sees: it stops at joblib's first inline array."""
    seen, strings = set(), []
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            if op.name in ("GLOBAL", "INST"):
                seen.add(arg.replace(" ", "."))
            elif "UNICODE" in op.name or "STRING" in op.name:
                strings.append(arg)
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                seen.add(strings[-2] + "." + strings[-1])
    except Exception:  # noqa: BLE001 - the inline array bytes are not opcodes
        pass
    return seen


@pytest.mark.parametrize("where", ["attribute", "object_array"])
def test_a_global_after_an_inline_array_is_found(tmp_path, models, where):
    """The issue's file: an opcode walk stops at the first array and never sees the payload."""
    marker = tmp_path / "PWNED"
    evil, names = _evil(models, marker, "posix.system", where)
    data = dumps(evil, "joblib")
    assert "posix.system" not in _genops_globals(data)
    report = picklescan.scan_bytes(data, name="model.joblib")
    assert report.arrays >= 2 and report.disallowed == names
    if where == "object_array":
        assert report.nested == 1


def test_array_bytes_that_look_like_opcodes_are_skipped_not_parsed(tmp_path, models):
    """An array *holding* the bytes of a malicious pickle is data: no false refusal, nothing runs."""
    marker = tmp_path / "PWNED"
    evil, _ = _evil(models, marker, "posix.system", "attribute")
    model = smuggle(models["lr"], np.frombuffer(pickle.dumps(evil.zz_extra_), dtype=np.uint8).copy())
    data = dumps(model, "joblib")
    report = picklescan.scan_bytes(data, name="model.joblib")
    assert report.ok, report.message()
    loaded = loaders._unpickle_sklearn(data, "model.joblib", loaders.Trust())
    assert loaded.zz_extra_.dtype == np.uint8
    assert not marker.exists()


# ------------------------------------------------------------------------------ legitimate models


@pytest.mark.parametrize("fmt", FORMATS + ("pickle0", "pickle1", "pickle3"))
def test_every_legitimate_model_passes(models, fmt):
    failures = {}
    for name, model in models.items():
        if fmt in ("pickle0", "pickle1", "pickle3"):
            data = pickle.dumps(model, protocol=int(fmt[-1]))
        else:
            data = dumps(model, fmt)
        report = picklescan.scan_bytes(data, name=name)
        if not report.ok:
            failures[name] = report.message()
    assert not failures, failures


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)])
def test_the_scanner_names_exactly_what_joblib_imports(tmp_path, models, compress):
    """Differential: every global joblib's own unpickler imports, and nothing else."""
    from joblib.numpy_pickle import NumpyUnpickler

    for name, model in models.items():
        path = tmp_path / "m.joblib"
        joblib.dump(model, path, compress=compress)
        seen = set()

        class Recording(NumpyUnpickler):
            def find_class(self, module, qualname):
                import _compat_pickle

                pair = (module, qualname)
                if self.proto < 3 and pair in _compat_pickle.NAME_MAPPING:
                    pair = _compat_pickle.NAME_MAPPING[pair]
                seen.add(pair)
                return super().find_class(module, qualname)

        with open(path, "rb") as handle:
            _kind, stream = picklescan.open_stream(handle)
            Recording("", stream, True).load()
        report = picklescan.scan_path(path)
        assert report.ok, (name, report.message())
        assert report.pairs == seen, (name, report.pairs ^ seen)


def test_legitimate_models_load_through_the_guarded_loader(models):
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    for name in ("lr", "pipe", "rf", "hgb", "cal", "stack", "knn_kd", "mlp"):
        for fmt in ("joblib", "joblib-zlib", "pickle5"):
            est = loaders._unpickle_sklearn(dumps(models[name], fmt), name, loaders.Trust())
            assert np.array_equal(est.predict(x), models[name].predict(x)), (name, fmt)


# ------------------------------------------------------------------------------ what cannot be verified is refused


def _scan(data: bytes) -> picklescan.ScanReport:
    return picklescan.scan_bytes(data, name="odd.pkl")


def test_unverifiable_streams_are_refused(models):
    good = pickle.dumps(models["lr"], protocol=4)
    cases = {
        "data after the end of the pickle": good + b"\x80\x04cos\nsystem\n.",
        "truncated": good[:-40],
        "persistent ids": b"\x80\x02X\x01\x00\x00\x00aQ.",
        "extension registry": b"\x80\x02\x82\x01.",
        "out-of-band": b"\x80\x05\x97.",
        "unknown pickle opcode": b"\x80\x04\xff.",
        "computed name": (b"\x80\x04\x8c\x08builtins\x8c\x03str\x93\x8c\x02os\x85R\x8c\x06system\x93."),
        "not a pickle": b"{\"not\": \"a pickle\"}",
    }
    for why, data in cases.items():
        report = _scan(data)
        assert not report.ok and report.problem and why in report.problem, (why, report.problem)


def test_compressed_stream_tricks_are_refused(models):
    import bz2
    import zlib

    raw = dumps(models["lr"], "joblib")
    for data, why in ((zlib.compress(raw) + b"more", "data after the end of the zlib stream"),
                      (zlib.compress(raw)[:-20], "truncated"),
                      (bz2.compress(raw) + bz2.compress(b"x"), "data after the end of the bz2 stream"),
                      (b"ZF0x00000000000001e\x00" + zlib.compress(raw), "joblib < 0.9.3"),
                      (b"\x04\x22\x4d\x18" + raw, "lz4")):
        report = _scan(data)
        assert not report.ok and why in report.problem, (why, report.problem)


def _lit(value) -> bytes:
    """Opcodes for a literal, without memo entries (so hand-made streams stay readable)."""
    if value is None:
        return b"N"
    if value is True or value is False:
        return b"\x88" if value else b"\x89"
    if isinstance(value, int):
        return b"K" + bytes([value]) if 0 <= value < 256 else b"J" + value.to_bytes(4, "little", signed=True)
    if isinstance(value, str):
        raw = value.encode()
        return b"\x8c" + bytes([len(raw)]) + raw
    if isinstance(value, tuple):
        return b"(" + b"".join(_lit(v) for v in value) + b"t"
    raise TypeError(value)


def _wrapper_pickle(dtype_state, shape=(2,), payload=b""):
    """A hand-made joblib stream: one NumpyArrayWrapper with the given dtype, then `payload`."""
    spec, state = dtype_state
    return (b"\x80\x04" + _lit("joblib.numpy_pickle") + _lit("NumpyArrayWrapper") + b"\x93)\x81"
            + b"}(" + _lit("shape") + _lit(shape)
            + _lit("dtype") + _lit("numpy") + _lit("dtype") + b"\x93" + _lit(spec) + b"R" + _lit(state) + b"b"
            + _lit("numpy_array_alignment_bytes") + b"Nub" + payload)


def test_dtype_flags_numpy_would_trust_are_checked():
    """numpy takes hasobject from the pickled flags: 'O' without them would read pointers from the file."""
    obj_without_flags = (("O8", False, True), (3, "|", None, None, None, -1, -1, 0))
    report = _scan(_wrapper_pickle(obj_without_flags, payload=b"\x00" * 16 + b"."))
    assert not report.ok and "without its object flags" in report.problem
    float_with_object_flags = (("f8", False, True), (3, "<", None, None, None, -1, -1, 63))
    report = _scan(_wrapper_pickle(float_with_object_flags, payload=b"\x00" * 16 + b"."))
    assert not report.ok and "object flags" in report.problem
    fine = (("f8", False, True), (3, "<", None, None, None, -1, -1, 0))
    assert _scan(_wrapper_pickle(fine, payload=b"\x00" * 16 + b".")).ok


def test_a_nested_object_array_pickle_is_walked_to_its_end():
    """hasobject -> joblib reads a nested pickle right there: its globals count, then the outer stream goes on."""
    obj = (("O8", False, True), (3, "|", None, None, None, -1, -1, 63))
    nested = pickle.dumps(np.array([Call(os.system, ("true",)), 1], dtype=object), protocol=5)
    report = _scan(_wrapper_pickle(obj, payload=nested + b"."))
    assert report.disallowed == ["posix.system"] and report.nested == 1
    after = b"\x8c\x02os\x8c\x06getcwd\x93."  # a global after the nested pickle, in the outer stream
    report = _scan(_wrapper_pickle(obj, payload=pickle.dumps(np.array([1, "a"], dtype=object), protocol=5) + b"0" + after))
    assert report.disallowed == ["os.getcwd"]


def test_a_global_hidden_past_a_frame_is_found():
    """Array bytes come from the file, not the current frame: what the frame still holds runs after them."""
    fine = (("u1", False, True), (3, "|", None, None, None, -1, -1, 0))
    body = _wrapper_pickle(fine, shape=(4,))[2:]
    tail = b"0\x8c\x02os\x8c\x06system\x93."
    frame = body + tail
    data = b"\x80\x04\x95" + len(frame).to_bytes(8, "little") + frame + b"ABCD"
    report = _scan(data)
    # the wrapper's BUILD reads its 4 bytes *after* the frame, then the frame's tail names os.system
    assert report.disallowed == ["os.system"], (report.disallowed, report.problem)


def test_wrappers_used_in_unusual_ways_are_refused():
    odd = (b"\x80\x04\x8c\x07copyreg\x8c\x0e_reconstructor\x93"
           b"\x8c\x13joblib.numpy_pickle\x8c\x11NumpyArrayWrapper\x93"
           b"\x8c\x08builtins\x8c\x04dict\x93N\x87R}b.")
    report = _scan(odd)
    assert not report.ok and "never write" in report.problem
    state_after_use = (b"\x80\x04\x8c\x05numpy\x8c\x05dtype\x93\x8c\x02V8\x89\x88\x87R\x94"
                       b"\x85" b"0h\x00" b"(K\x03\x8c\x01|NNNK\x08K\x01K\x00tb.")
    report = _scan(state_after_use)
    assert not report.ok and "after the dtype was used" in report.problem


def test_partial_only_around_listed_globals():
    ok = pickle.dumps(__import__("functools").partial(np.log1p), protocol=4)
    assert _scan(ok).ok
    bad = pickle.dumps(__import__("functools").partial(Call(os.system, ("true",))), protocol=4)
    report = _scan(bad)
    assert not report.ok and "posix.system" in report.disallowed


def test_dunder_state_keys_are_refused(models):
    model = smuggle(models["lr"], 1)
    data = pickle.dumps(model, protocol=4).replace(b"zz_extra_", b"__class__")
    report = _scan(data)
    assert not report.ok and "__class__" in report.problem


def test_random_corruptions_never_get_past_both_checks(tmp_path, models):
    """Mutated joblib files: whatever the scanner accepts, the guarded loader imports nothing else."""
    rng = random.Random(16)
    sources = [dumps(models[n], "joblib") for n in ("lr", "hgb", "ohe_obj", "knn_kd")]
    accepted = 0
    for _ in range(400):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data)
        report = _scan(data)
        if not report.ok:
            continue
        accepted += 1
        try:
            loaders._unpickle_sklearn(data, "mutant", loaders.Trust())
        except loaders.UnsafeModelError as exc:  # pragma: no cover - would be a scanner bug
            pytest.fail(f"the scanner accepted a file whose load imports {exc}")
        except loaders.LoadError:
            pass  # a corrupt value: refused by numpy/sklearn, nothing imported outside the list
    assert accepted > 0


# ------------------------------------------------------------------------------ the allowlist


GADGETS = [
    "builtins.getattr", "builtins.eval", "builtins.exec", "builtins.compile", "builtins.__import__", "builtins.open",
    "builtins.type", "builtins.setattr", "os.system", "posix.system", "subprocess.Popen", "subprocess.run",
    "numpy._core._ufunc_reconstruct", "numpy.core._ufunc_reconstruct", "numpy.load", "numpy.fromfile",
    "joblib.load", "pickle.loads", "copyreg.__newobj__", "operator.attrgetter", "operator.methodcaller",
    "importlib.import_module", "sklearn.datasets.dump_svmlight_file", "sklearn.datasets._svmlight_format_io.dump_svmlight_file",
    "sklearn.utils.validation.check_memory", "sklearn.utils._set_output.check_library_installed",
    "sklearn.utils.deprecation.deprecated", "sklearn.utils.parallel.Parallel", "sklearn.tree._export.export_graphviz",
    "joblib.numpy_pickle_compat.NDArrayWrapper", "joblib.memory.Memory",
]


def test_the_allowlist_holds_no_known_gadget():
    allow = picklescan.default_allowlist()
    present = [g for g in GADGETS if picklescan.parse_global(g) in allow]
    assert not present
    for module, _name in allow.pairs:
        parts = set(module.split("."))
        assert not parts & {"tests", "_testing", "externals", "datasets", "experimental", "callback"}, module


def test_the_generated_allowlist_is_current():
    script = RUNTIME_DIR / "scripts" / "generate_pickle_allowlist.py"
    res = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr


def test_trusted_global_syntax():
    assert picklescan.parse_global("mypkg.models.Scorer") == ("mypkg.models", "Scorer")
    assert picklescan.parse_global("mypkg.models:Outer.Inner") == ("mypkg.models", "Outer.Inner")
    for bad in ("system", "os.", ".x", "os.sys tem", "a:b:c", 3):
        with pytest.raises(ValueError):
            picklescan.parse_global(bad)


# ------------------------------------------------------------------------------ prepare (the image build)


def _write(src: Path, model, fmt="joblib", X=None):
    src.mkdir(parents=True, exist_ok=True)
    (src / "model.joblib").write_bytes(dumps(model, fmt))
    if X is not None:
        np.savetxt(src / "reference.csv", X, delimiter=",", header="a,b,c,d", comments="")


@pytest.mark.parametrize("kind", ["posix.system", "builtins.eval", "dotted"])
def test_prepare_refuses_before_unpickling(tmp_path, models, iris, kind):
    marker = tmp_path / "PWNED"
    evil, names = _evil(models, marker, kind, "attribute")
    _write(tmp_path / "src", evil, "joblib-zlib")
    opts = {"name": "evil", "version": "1", "framework": "sklearn", "entrypoint": "model.joblib"}
    with pytest.raises(PrepareError) as err:
        prepare(tmp_path / "src", opts, tmp_path / "out", log=lambda m: None)
    assert "model.joblib" in str(err.value) and all(n in str(err.value) for n in names)
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert _wait_absent(marker, kind)


def test_trusted_globals_let_a_model_through_and_are_recorded(tmp_path, models, iris):
    from fractions import Fraction

    X, _ = iris
    model = smuggle(models["lr"], Fraction(1, 3))
    _write(tmp_path / "src", model, X=X)
    opts = {"name": "iris", "version": "1", "framework": "sklearn", "entrypoint": "model.joblib",
            "reference_data": "reference.csv", "convert_to_onnx": False}
    with pytest.raises(PrepareError, match=r"fractions\.Fraction"):
        prepare(tmp_path / "src", opts, tmp_path / "refused", log=lambda m: None)
    m = prepare(tmp_path / "src", dict(opts, trusted_globals=["fractions.Fraction"]), tmp_path / "out", log=lambda m: None)
    assert m["safety"]["trusted_globals"] == ["fractions.Fraction"] and m["safety"]["trust_pickle"] is False
    assert m["safety"]["check"]["checked"] is True and "fractions.Fraction" in m["safety"]["check"]["globals"]
    assert m["safety"]["check"]["allowlist_sha256"] == picklescan.allowlist_digest()
    served = loaders.load_served(tmp_path / "out", m)
    assert served.estimator.zz_extra_ == Fraction(1, 3)


def test_trust_pickle_switches_the_check_off_loudly(tmp_path, models, iris):
    from fractions import Fraction

    model = smuggle(models["lr"], Fraction(1, 3))
    _write(tmp_path / "src", model)
    logs = []
    opts = {"name": "iris", "version": "1", "framework": "sklearn", "entrypoint": "model.joblib",
            "convert_to_onnx": False, "trust_pickle": True}
    m = prepare(tmp_path / "src", opts, tmp_path / "out", log=logs.append)
    assert any("WARNING: trust_pickle is true" in line for line in logs)
    assert m["safety"]["trust_pickle"] is True and m["safety"]["check"]["checked"] is False
    assert loaders.load_served(tmp_path / "out", m).estimator.zz_extra_ == Fraction(1, 3)


def test_trust_options_are_validated(tmp_path, models):
    _write(tmp_path / "src", models["lr"])
    base = {"name": "iris", "version": "1", "framework": "sklearn", "entrypoint": "model.joblib"}
    for extra, match in (({"trusted_globals": "os.system"}, "must be a list"),
                         ({"trusted_globals": ["system"]}, "not a global"),
                         ({"trust_pickle": "yes"}, "true or false"),
                         ({"trust_model_code": True}, "applies to Keras")):
        with pytest.raises(PrepareError, match=match):
            prepare(tmp_path / "src", dict(base, **extra), tmp_path / "out", log=lambda m: None)


def test_legitimate_models_prepare_with_their_globals_recorded(tmp_path, models, iris):
    X, _ = iris
    out, m = make_model_dir(tmp_path, models["rf"], X, convert_to_onnx=False)
    check = m["safety"]["check"]
    assert check["checked"] and "sklearn.ensemble._forest.RandomForestClassifier" in check["globals"]
    assert check["arrays"] > 0 and m["safety"]["trusted_globals"] == []


# ------------------------------------------------------------------------------ the runtime (image built elsewhere, file swapped)


def _swap(out: Path, data: bytes) -> dict:
    """Replace the served pickle *and* its manifest hash, as a rogue build or a tampered image would."""
    rel = "original/model.joblib"
    (out / rel).write_bytes(data)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"][rel] = mf.sha256_bytes(data)
    mf.write(out, manifest)
    return manifest


@pytest.mark.parametrize("kind,where,fmt", [("os.system", "attribute", "joblib"),
                                            ("subprocess.Popen", "object_array", "joblib-gzip"),
                                            ("ufunc_reconstruct", "step", "pickle5")])
def test_load_served_refuses_a_swapped_pickle(tmp_path, models, iris, kind, where, fmt):
    X, _ = iris
    out, _ = make_model_dir(tmp_path, models["pipe"] if where == "step" else models["lr"], X, convert_to_onnx=False)
    marker = tmp_path / "PWNED"
    evil, names = _evil(models, marker, kind, where)
    manifest = _swap(out, dumps(evil, fmt))
    with pytest.raises(loaders.UnsafeModelError) as err:
        loaders.load_served(out, manifest)
    assert "original/model.joblib" in str(err.value) and all(n in str(err.value) for n in names)
    assert _wait_absent(marker, kind)


def test_server_stays_not_ready_with_the_reason(tmp_path, models, iris):
    X, _ = iris
    out, _ = make_model_dir(tmp_path, models["lr"], X, convert_to_onnx=False)
    marker = tmp_path / "PWNED"
    evil, names = _evil(models, marker, "posix.system", "object_array")
    _swap(out, dumps(evil, "joblib-zlib"))
    srv = start_server(out, tmp_path, wait_ready=False)
    try:
        def failed():
            status, _, body = srv.request("GET", "/v2/health/ready")
            return status == 503 and json.loads(body).get("state") == "failed"

        wait_for(failed, 30, "not-ready state", srv)
        status, _, body = srv.request("GET", "/v2/health/ready")
        reason = json.loads(body)["reason"]
        assert "original/model.joblib" in reason and "posix.system" in reason and "allowlist" in reason
        assert srv.request("GET", "/v2/health/live")[0] == 200
        status, _, body = srv.request("POST", "/v2/models/iris/infer", json.dumps(ROW))
        assert status == 503
        assert any(r.get("event.action") == "model_load_failed" and "posix.system" in r.get("modelops.reason", "") for r in srv.logs())
    finally:
        srv.stop()
    assert not marker.exists()


def test_exit_on_load_failure_exits_3_for_a_refused_pickle(tmp_path, models, iris):
    X, _ = iris
    out, _ = make_model_dir(tmp_path, models["lr"], X, convert_to_onnx=False)
    marker = tmp_path / "PWNED"
    evil, _ = _evil(models, marker, "builtins.exec", "attribute")
    _swap(out, dumps(evil, "pickle4"))
    env = dict(os.environ, PYTHONPATH=str(RUNTIME_DIR))
    res = subprocess.run([sys.executable, "-m", "modelops_runtime", "serve", "--model-dir", str(out), "--host",
                          "127.0.0.1", "--port", "0", "--exit-on-load-failure"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 3
    assert "builtins.exec" in res.stdout and "original/model.joblib" in res.stdout
    assert not marker.exists()


def test_a_manifest_that_trusts_globals_serves_them(tmp_path, models, iris):
    from fractions import Fraction

    X, _ = iris
    src = tmp_path / "src"
    _write(src, smuggle(models["lr"], Fraction(2, 3)), X=X)
    opts = {"name": "iris", "version": "1", "framework": "sklearn", "entrypoint": "model.joblib",
            "reference_data": "reference.csv", "convert_to_onnx": False, "trusted_globals": ["fractions.Fraction"],
            "sample": {"instances": X[:2].tolist(), "expected": models["lr"].predict(X[:2]).tolist()}}
    prepare(src, opts, tmp_path / "out", log=lambda m: None)
    srv = start_server(tmp_path / "out", tmp_path)
    try:
        assert srv.request("GET", "/v2/health/ready")[0] == 200
        assert srv.request("POST", "/v2/models/iris/infer", json.dumps(ROW))[0] == 200
    finally:
        srv.stop()


def test_a_manifest_with_bad_trust_is_refused(tmp_path, onnx_model_dir):
    manifest = json.loads((onnx_model_dir / "manifest.json").read_text())
    manifest["safety"] = {"trusted_globals": "os.system"}
    with pytest.raises(mf.ManifestError, match="trusted_globals"):
        mf.validate(manifest)
