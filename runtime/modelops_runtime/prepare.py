"""``prepare``: turn a model source + options.json into a verified /model directory.

Layout written to ``--out``::

    manifest.json            the contract read by ``serve``
    original/<entrypoint>    the model as given (file or SavedModel directory)
    converted/model.onnx     only when a scikit-learn model was converted and kept
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np

from . import __version__, config, drift
from . import manifest as mf
from .loaders import LoadError, Model, OnnxModel, Trust, _onnx_session, load_source
from .samples import SampleMismatch, check_sample, validate_sample
from .schema import TensorSpec

KNOWN_KEYS = {
    "name", "version", "framework", "entrypoint", "reference_data", "sample",
    "convert_to_onnx", "inputs", "outputs", "runtime", "created_at", "drift_bins", "description",
    "trusted_globals", "trust_pickle", "trust_model_code",
}
PICKLE_FRAMEWORKS = ("sklearn",)
CODE_FRAMEWORKS = ("keras", "tensorflow", "torchscript")
MAX_CHECK_ROWS = 100_000


class PrepareError(Exception):
    """A user-facing failure of prepare (bad options, unloadable model, sample mismatch...)."""


def _safe_join(root: Path, rel: str, what: str) -> Path:
    if not isinstance(rel, str) or not rel:
        raise PrepareError(f"{what} must be a non-empty relative path")
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise PrepareError(f"{what} {rel!r} must be a relative path inside --source")
    return root / p


def read_options(path: str | Path) -> dict:
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PrepareError(f"cannot read options file {path}: {exc}") from None
    try:
        opts = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PrepareError(f"options file {path} is not valid JSON: {exc}") from None
    if not isinstance(opts, dict):
        raise PrepareError(f"options file {path} must hold a JSON object")
    return opts


def normalise_options(opts: dict, warn=None) -> dict:
    opts = dict(opts)
    unknown = set(opts) - KNOWN_KEYS - set(config.MANIFEST_KEYS)
    if unknown and warn:
        warn(f"ignoring unknown option key(s): {sorted(unknown)}")
    for key in ("name", "version", "framework", "entrypoint"):
        if key not in opts or opts[key] in (None, ""):
            raise PrepareError(f"options: {key!r} is required")
    name = str(opts["name"])
    if not name or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name) or name.startswith("."):
        raise PrepareError(f"options: name {name!r} may only contain letters, digits, '-', '_' and '.'")
    version = str(opts["version"])
    if not version or not all(c.isascii() and (c.isalnum() or c in "-_.+") for c in version):
        raise PrepareError(f"options: version {version!r} may only contain ASCII letters, digits, '-', '_', '.' and '+'")
    if opts["framework"] not in mf.FRAMEWORKS:
        raise PrepareError(f"options: framework {opts['framework']!r} is not one of {list(mf.FRAMEWORKS)}")
    runtime = dict(opts.get("runtime") or {})
    for key in config.MANIFEST_KEYS:  # runtime options may also sit at the top level
        if key in opts:
            runtime.setdefault(key, opts[key])
    try:
        runtime = config.normalise_runtime(runtime)
    except config.ConfigError as exc:
        raise PrepareError(str(exc)) from None
    try:
        sample = validate_sample(opts.get("sample"))
    except ValueError as exc:
        raise PrepareError(f"options: {exc}") from None
    convert = opts.get("convert_to_onnx", True)
    if not isinstance(convert, bool):
        raise PrepareError("options: convert_to_onnx must be true or false")
    bins = opts.get("drift_bins", 10)
    if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= 100:
        raise PrepareError("options: drift_bins must be an integer between 2 and 100")
    for key in ("inputs", "outputs"):
        if opts.get(key) is not None:
            if not isinstance(opts[key], list):
                raise PrepareError(f"options: {key} must be a list of {{name, datatype, shape}}")
            try:
                [TensorSpec.from_json(o) for o in opts[key]]
            except ValueError as exc:
                raise PrepareError(f"options: {key}: {exc}") from None
    try:
        trust = Trust.parse(opts, "options")
    except ValueError as exc:
        raise PrepareError(str(exc)) from None
    if (trust.trusted_globals or trust.trust_pickle) and opts["framework"] not in PICKLE_FRAMEWORKS:
        raise PrepareError(f"options: trusted_globals and trust_pickle apply to scikit-learn pickle/joblib files, "
                           f"not to {opts['framework']} models")
    if trust.trust_model_code and opts["framework"] not in CODE_FRAMEWORKS:
        raise PrepareError(f"options: trust_model_code applies to Keras, SavedModel and TorchScript models, "
                           f"not to {opts['framework']} models (pickles: trusted_globals / trust_pickle)")
    return {
        "name": name,
        "version": version,
        "framework": opts["framework"],
        "entrypoint": opts["entrypoint"],
        "reference_data": opts.get("reference_data"),
        "sample": sample,
        "convert_to_onnx": convert,
        "inputs": opts.get("inputs"),
        "outputs": opts.get("outputs"),
        "runtime": runtime,
        "created_at": opts.get("created_at"),
        "drift_bins": bins,
        "description": opts.get("description"),
        "trust": trust,
    }


def load_reference(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """Read reference rows from a .csv (with header) or .npy file."""
    if not path.is_file():
        raise PrepareError(f"reference_data {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            names = None
        elif suffix == ".csv":
            text = path.read_text(encoding="utf-8-sig")
            reader = csv.reader(io.StringIO(text))
            header = next(reader, None)
            if not header:
                raise PrepareError(f"reference_data {path} is empty")
            rows = [r for r in reader if r]
            arr = np.asarray(rows, dtype=np.float64) if rows else np.empty((0, len(header)))
            names = [h.strip() for h in header]
        else:
            raise PrepareError(f"reference_data {path}: only .csv (with a header row) and .npy are supported")
    except PrepareError:
        raise
    except Exception as exc:
        raise PrepareError(f"cannot read reference_data {path}: {exc}") from None
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise PrepareError(f"reference_data {path} must be a non-empty 2-D table, got shape {list(arr.shape)}")
    if arr.dtype.kind not in "biuf":
        raise PrepareError(f"reference_data {path} must be numeric")
    return arr, names


def _copy_source(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, symlinks=False)
    else:
        shutil.copyfile(src, dest)


def _final_estimator(est):
    steps = getattr(est, "steps", None)
    return steps[-1][1] if steps else est


def _compare_predictions(sk_model: Model, onnx_model: OnnxModel, x: np.ndarray) -> tuple[bool, str, dict]:
    primary = sk_model.output_names[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = sk_model.predict({sk_model.input_names[0]: x.astype(np.float64)})
    xin = x.astype(np.float32 if onnx_model.inputs[0].datatype == "FP32" else np.float64)
    got = onnx_model.predict({onnx_model.input_names[0]: xin})
    details = {}
    a, b = np.asarray(want[primary]), np.asarray(got[primary])
    if a.size != b.size:
        return False, f"{primary}: ONNX gives {b.size} values, scikit-learn {a.size}", details
    b = b.reshape(a.shape)
    if a.dtype.kind in "biuf" and b.dtype.kind in "biuf":
        equal = np.asarray(a, dtype=np.float64) == np.asarray(b, dtype=np.float64)
        if not equal.all():
            diff = float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
            details["max_abs_diff"] = diff
            return False, f"{primary} differs on {int((~equal).sum())} of {a.shape[0]} rows (max abs diff {diff:.3g})", details
    else:
        equal = a.astype(str) == b.astype(str)
        if not equal.all():
            return False, f"{primary} differs on {int((~equal).sum())} of {a.shape[0]} rows", details
    for name in sk_model.output_names[1:]:
        if name in want and name in got:
            d = float(np.max(np.abs(np.asarray(want[name], np.float64) - np.asarray(got[name], np.float64).reshape(np.shape(want[name])))))
            details[f"max_abs_diff_{name}"] = d
    return True, "", details


def try_convert(sk_model: Model, check_x: np.ndarray | None, out_dir: Path, log) -> tuple[OnnxModel | None, dict, Path | None]:
    """Convert a scikit-learn model with skl2onnx and keep it only if predictions are identical."""
    record = {"attempted": True, "used": False, "target": "onnx"}
    if check_x is None or check_x.size == 0:
        record["reason"] = "no reference data or sample to verify the conversion against; serving scikit-learn"
        return None, record, None
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    except ImportError:
        record["reason"] = "skl2onnx is not installed in the build stage; serving scikit-learn"
        return None, record, None
    est = sk_model.estimator
    n_features = sk_model.inputs[0].shape[1]
    final = _final_estimator(est)
    options = {id(final): {"zipmap": False}} if hasattr(final, "classes_") else None
    reasons = []
    for type_name, tensor_type in (("FP32", FloatTensorType), ("FP64", DoubleTensorType)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onx = convert_sklearn(est, initial_types=[("input", tensor_type([None, n_features]))], options=options)
            onx.graph.name = "sklearn_model"  # skl2onnx uses a random uuid: keep builds reproducible
            data = onx.SerializeToString()
            sess = _onnx_session(data, "converted model", 1)
        except Exception as exc:
            reasons.append(f"{type_name}: conversion failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})")
            continue
        onnx_outs = [o.name for o in sess.get_outputs()]
        outputs = []
        ok = True
        for i, spec in enumerate(sk_model.outputs):
            src = spec.source if spec.source in onnx_outs else (onnx_outs[i] if i < len(onnx_outs) else None)
            if spec.name == "prediction" and onnx_outs:
                src = onnx_outs[0]
            if src is None:
                ok = False
                break
            ort_type = next(o.type for o in sess.get_outputs() if o.name == src)
            from .loaders import _ORT_TYPES

            outputs.append(TensorSpec(spec.name, _ORT_TYPES.get(ort_type, spec.datatype), list(spec.shape), source=src))
        if not ok:
            reasons.append(f"{type_name}: converted model lacks outputs for {sk_model.output_names}")
            continue
        onnx_model = OnnxModel(sess, [TensorSpec("input", type_name, [-1, n_features], source="input")], outputs)
        try:
            same, why, details = _compare_predictions(sk_model, onnx_model, check_x)
        except Exception as exc:
            reasons.append(f"{type_name}: converted model failed on the check data ({type(exc).__name__}: {exc})")
            continue
        if same:
            path = out_dir / "converted" / "model.onnx"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            record.update(
                used=True,
                input_datatype=type_name,
                rows_checked=int(check_x.shape[0]),
                reason=f"ONNX ({type_name} input) predictions identical to scikit-learn on {check_x.shape[0]} rows",
                **{k: v for k, v in details.items()},
            )
            return onnx_model, record, path
        reasons.append(f"{type_name}: {why}")
    record["rows_checked"] = int(check_x.shape[0])
    record["reason"] = "kept scikit-learn: " + "; ".join(reasons)
    return None, record, None


def prepare(source: str | Path, options: dict, out: str | Path, log=None) -> dict:
    """Run the whole prepare step; returns the manifest written to ``out``."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    source, out = Path(source), Path(out)
    opts = normalise_options(options, warn=log)
    if not source.is_dir():
        raise PrepareError(f"--source {source} is not a directory")
    entry_path = _safe_join(source, opts["entrypoint"], "entrypoint")
    if not entry_path.exists():
        raise PrepareError(f"entrypoint {opts['entrypoint']} not found in {source}")
    framework = opts["framework"]

    ref, ref_names = None, None
    if opts["reference_data"]:
        ref, ref_names = load_reference(_safe_join(source, opts["reference_data"], "reference_data"))
    sample = opts["sample"]
    probe = ref[:8] if ref is not None else (np.asarray(sample["instances"]) if sample else None)
    if probe is not None and probe.dtype.kind not in "biuf":
        probe = None

    trust = opts["trust"]
    if trust.trust_pickle:
        log("WARNING: trust_pickle is true: the model file's pickle is NOT checked against the allowlist; "
            "whatever code it references runs at this build and in every serving container")
    if trust.trust_model_code:
        log("WARNING: trust_model_code is true: Keras Lambda layers, SavedModel ops and TorchScript operators "
            "that can run code or touch files are NOT refused for this model")
    try:
        model = load_source(framework, entry_path, probe=probe, inputs=opts["inputs"], outputs=opts["outputs"],
                            trust=trust)
    except LoadError as exc:
        raise PrepareError(f"{framework} model {opts['entrypoint']}: {exc}") from None

    out.mkdir(parents=True, exist_ok=True)
    for stale in ("original", "converted"):
        if (out / stale).exists():
            shutil.rmtree(out / stale)
    original_rel = "original/" + Path(opts["entrypoint"]).as_posix()
    _copy_source(entry_path, out / original_rel)

    served, served_rel, served_framework = model, original_rel, framework
    sklearn_hints = None
    if framework == "sklearn":
        rows = []
        if ref is not None:
            rows.append(ref[:MAX_CHECK_ROWS].astype(np.float64))
        if sample:
            try:
                rows.append(np.asarray(sample["instances"], dtype=np.float64).reshape(len(sample["instances"]), -1))
            except (TypeError, ValueError):
                pass
        check_x = np.concatenate(rows, axis=0) if rows else None
        if check_x is not None and check_x.shape[1] != model.inputs[0].shape[1]:
            raise PrepareError(
                f"reference/sample rows have {check_x.shape[1]} features, model expects {model.inputs[0].shape[1]}"
            )
        if opts["convert_to_onnx"]:
            onnx_model, conversion, path = try_convert(model, check_x, out, log)
            if onnx_model is not None:
                served, served_rel, served_framework = onnx_model, path.relative_to(out).as_posix(), "onnx"
        else:
            conversion = {"attempted": False, "used": False, "reason": "convert_to_onnx is false"}
        if served_framework == "sklearn":
            from .loaders import check_label_from_proba

            ok, why = check_label_from_proba(model, check_x)
            sklearn_hints = {"label_from_probabilities": ok, "reason": why}
            model.label_from_proba = ok
    else:
        conversion = {"attempted": False, "used": False, "reason": f"only scikit-learn models are converted ({framework} served as is)"}
    log(f"conversion: {conversion['reason']}")

    if sample:
        try:
            check_sample(served, sample)
        except SampleMismatch as exc:
            raise PrepareError(f"sample check failed for {served_framework} model: {exc}") from None

    reference = None
    drift_note = None
    if ref is not None:
        spec = served.inputs[0]
        if len(served.inputs) == 1 and len(spec.shape) == 2 and spec.shape[1] in (-1, ref.shape[1]):
            names = ref_names if ref_names and len(ref_names) == ref.shape[1] else None
            reference = drift.reference_stats(ref, names, bins=opts["drift_bins"])
        else:
            drift_note = f"drift needs a single 2-D input; model input {spec.name} has shape {spec.shape}"
    else:
        drift_note = "no reference_data given"

    files = mf.hash_tree(out, [original_rel] + ([served_rel] if served_rel != original_rel else []))
    manifest = {
        "schema_version": mf.SCHEMA_VERSION,
        "name": opts["name"],
        "version": opts["version"],
        "framework": served_framework,
        "original_framework": framework,
        "entrypoint": served_rel,
        "original_entrypoint": original_rel,
        "platform": served.platform,
        "files": files,
        "inputs": [t.to_json() for t in served.inputs],
        "outputs": [t.to_json() for t in served.outputs],
        "reference": reference,
        "sample": sample,
        "conversion": conversion,
        "safety": dict(trust.to_json(), check=model.safety),
        "runtime": opts["runtime"],
        "runtime_version": __version__,
        "created_by": f"modelops_runtime {__version__} prepare",
    }
    if drift_note:
        manifest["drift_note"] = drift_note
    if sklearn_hints is not None:
        manifest["sklearn"] = sklearn_hints
    if opts["created_at"] is not None:
        manifest["created_at"] = str(opts["created_at"])
    if opts["description"] is not None:
        manifest["description"] = str(opts["description"])
    mf.write(out, manifest)
    return manifest
