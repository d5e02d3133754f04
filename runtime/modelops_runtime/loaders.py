"""Framework loaders.

Every loader returns a :class:`Model`: a callable with a V2 schema
(``inputs``/``outputs`` as :class:`TensorSpec`) and
``predict(feeds, wanted) -> {output name: ndarray}``.

Two entry points:

* :func:`load_source` - used by ``prepare`` on the untrusted-layout build
  input; loads the model for real and infers the schema.
* :func:`load_served` - used by ``serve``; takes the schema from the
  manifest and checks sha256 of each file *before* deserialising it. For the
  single-file formats (pickle/joblib, ONNX, TorchScript) the hash is computed
  on the exact bytes handed to the deserialiser, so there is no window
  between check and use.

Before anything is deserialised, the file is checked for what loading it could
run (:mod:`.picklescan` for pickle/joblib, :mod:`.formatscan` for Keras,
SavedModel and TorchScript), with the trust the manifest records
(:class:`Trust`); a refusal is an :class:`UnsafeModelError` (a LoadError).

Heavy frameworks (TensorFlow, Keras, torch) are imported lazily, only when a
model of that kind is loaded.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from . import formatscan, picklescan
from . import manifest as mf
from .schema import TensorSpec, dims_from_framework, numpy_to_v2, v2_to_numpy


class LoadError(Exception):
    """The model could not be loaded (corrupt file, wrong framework, missing package)."""


class UnsafeModelError(LoadError):
    """Loading the file could run code that nobody allowed: refused before it was loaded."""


# --------------------------------------------------------------------------- trust


class Trust:
    """What a site decided to trust for one model (options.json at prepare, the manifest at serve).

    * ``trusted_globals``: extra ``module.name`` globals a pickle may reference (added to the allowlist);
    * ``trust_pickle``: do not check pickles at all;
    * ``trust_model_code``: Keras Lambda layers (``safe_mode=False``), SavedModel ops and TorchScript
      operators that the format checks refuse.
    """

    def __init__(self, trusted_globals=(), trust_pickle: bool = False, trust_model_code: bool = False):
        self.trusted_globals = sorted(set(trusted_globals or ()))
        self.trust_pickle = bool(trust_pickle)
        self.trust_model_code = bool(trust_model_code)

    @classmethod
    def parse(cls, raw: dict | None, where: str) -> "Trust":
        """From the keys trusted_globals / trust_pickle / trust_model_code of a dict; ValueError names the key."""
        raw = raw or {}
        globals_ = raw.get("trusted_globals") or []
        if not isinstance(globals_, list):
            raise ValueError(f"{where}: trusted_globals must be a list of 'module.name' strings")
        for item in globals_:
            try:
                picklescan.parse_global(item)
            except ValueError as exc:
                raise ValueError(f"{where}: trusted_globals: {exc}") from None
        for key in ("trust_pickle", "trust_model_code"):
            if not isinstance(raw.get(key, False), bool):
                raise ValueError(f"{where}: {key} must be true or false")
        return cls(globals_, raw.get("trust_pickle", False), raw.get("trust_model_code", False))

    @classmethod
    def from_manifest(cls, manifest: dict) -> "Trust":
        return cls.parse(manifest.get("safety"), "manifest safety")

    def allowlist(self):
        """The pickle allowlist in force, or None when pickles are trusted."""
        if self.trust_pickle:
            return None
        return picklescan.default_allowlist().extended(self.trusted_globals)

    def to_json(self) -> dict:
        return {"trusted_globals": list(self.trusted_globals), "trust_pickle": self.trust_pickle,
                "trust_model_code": self.trust_model_code}


def check_pickle(data: bytes, what: str, trust: Trust) -> dict:
    """Scan a pickle/joblib file's bytes; the record for the manifest, or UnsafeModelError."""
    allow = trust.allowlist()
    if allow is None:
        return {"format": "pickle", "checked": False, "reason": "trust_pickle is true: not checked"}
    report = picklescan.scan_bytes(data, allow, what)
    if not report.ok:
        raise UnsafeModelError(report.message())
    record = {"format": "pickle", "checked": True, "allowlist_sha256": picklescan.allowlist_digest()}
    record.update(report.to_json())
    record.pop("problem", None)
    record.pop("disallowed", None)
    return record


def check_format(framework: str, source, what: str, trust: Trust) -> dict:
    """Keras / SavedModel / TorchScript: refuse what could run code, unless trust_model_code.

    ONNX: refuse external data (never legitimate in a single-file model), whatever the trust.
    """
    checks = {"keras": formatscan.check_keras, "tensorflow": formatscan.check_savedmodel,
              "torchscript": formatscan.check_torchscript, "onnx": formatscan.check_onnx}
    if framework not in checks:
        return {"format": framework, "checked": False, "reason": "not a format this runtime checks"}
    report = checks[framework](source)
    report.name = what
    if report.corrupt:
        raise LoadError(f"cannot load {what} as an ONNX model: {report.corrupt}")
    if not report.ok and (framework == "onnx" or not trust.trust_model_code):
        raise UnsafeModelError(report.message())
    record = {"checked": True}
    record.update(report.to_json())
    if framework == "keras":
        record["safe_mode"] = not trust.trust_model_code
    return record


class Model:
    framework = "unknown"

    safety: dict | None = None  # what the load-time safety check found (load_source)

    def __init__(self, inputs: list[TensorSpec], outputs: list[TensorSpec]):
        self.inputs = inputs
        self.outputs = outputs
        self.input_names = [t.name for t in inputs]
        self.output_names = [t.name for t in outputs]
        self.platform = self.framework

    def predict(self, feeds: dict[str, np.ndarray], wanted: list[str] | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def apply_overrides(self, inputs: list[dict] | None, outputs: list[dict] | None) -> None:
        """Replace inferred specs by user overrides (by position; the framework tensor name is kept)."""
        for attr, override in (("inputs", inputs), ("outputs", outputs)):
            if not override:
                continue
            current: list[TensorSpec] = getattr(self, attr)
            specs = [TensorSpec.from_json(o) for o in override]
            if current and len(specs) != len(current):
                raise LoadError(
                    f"{attr} override lists {len(specs)} tensors but the model has {len(current)}"
                )
            for i, spec in enumerate(specs):
                if spec.source is None and i < len(current):
                    spec.source = current[i].source or current[i].name
            setattr(self, attr, specs)
        self.input_names = [t.name for t in self.inputs]
        self.output_names = [t.name for t in self.outputs]


# --------------------------------------------------------------------------- sklearn


class SklearnModel(Model):
    framework = "sklearn"

    def __init__(self, estimator, inputs, outputs, label_from_proba: bool = False):
        self.estimator = estimator
        super().__init__(inputs, outputs)
        self.platform = "sklearn"
        self._methods: dict[str, Callable] = {}
        self.label_from_proba = label_from_proba
        self._bind()

    def _bind(self):
        est = self.estimator
        self._methods = {}
        for spec in self.outputs:
            kind = spec.source or spec.name
            if kind in ("label", "prediction", "predict"):
                self._methods[spec.name] = est.predict
            elif kind in ("probabilities", "predict_proba"):
                self._methods[spec.name] = est.predict_proba
            else:
                raise LoadError(f"sklearn output {spec.name!r} maps to unknown method {kind!r}")
        self._bind_pair()

    def apply_overrides(self, inputs, outputs):
        super().apply_overrides(inputs, outputs)
        self._bind()

    def _bind_pair(self):
        self._label_name = self._proba_name = None
        for spec in self.outputs:
            kind = spec.source or spec.name
            if kind in ("label", "predict"):
                self._label_name = spec.name
            elif kind in ("probabilities", "predict_proba"):
                self._proba_name = spec.name

    def predict(self, feeds, wanted=None):
        x = feeds[self.input_names[0]]
        names = wanted or self.output_names
        out = {}
        if self.label_from_proba and len(names) == 2:
            # One pass through the estimator instead of two: only enabled when prepare checked
            # that predict() == classes_[argmax(predict_proba())] for this estimator type and data.
            if self._label_name in names and self._proba_name in names:
                proba = np.asarray(self.estimator.predict_proba(x))
                out[self._proba_name] = proba
                out[self._label_name] = np.asarray(self.estimator.classes_).take(proba.argmax(axis=1))
                return out
        for name in names:
            out[name] = np.asarray(self._methods[name](x))
        return out


# Estimators whose predict() is the class of highest predict_proba() by construction.
ARGMAX_ESTIMATORS = frozenset({
    "LogisticRegression", "RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier",
    "ExtraTreeClassifier", "GradientBoostingClassifier", "HistGradientBoostingClassifier", "KNeighborsClassifier",
    "GaussianNB", "MultinomialNB", "BernoulliNB", "ComplementNB", "CategoricalNB", "MLPClassifier",
    "LinearDiscriminantAnalysis", "QuadraticDiscriminantAnalysis",
})


def check_label_from_proba(model: "SklearnModel", x: np.ndarray | None) -> tuple[bool, str]:
    """May the served model derive labels from probabilities (saving one estimator pass)?"""
    est = model.estimator
    final = est.steps[-1][1] if getattr(est, "steps", None) else est
    name = type(final).__name__
    if name not in ARGMAX_ESTIMATORS:
        return False, f"{name} is not known to predict the most probable class"
    if x is None or x.size == 0:
        return False, "no reference data or sample to check against"
    if not any((t.source or t.name) in ("probabilities", "predict_proba") for t in model.outputs):
        return False, "model has no probabilities output"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = np.asarray(est.predict(x))
        b = np.asarray(est.classes_).take(np.asarray(est.predict_proba(x)).argmax(axis=1))
    if a.shape != b.shape or not np.array_equal(a, b):
        return False, f"{name}: predict() differs from the most probable class on the check data"
    return True, f"{name}: labels taken from predict_proba (identical to predict() on {x.shape[0]} rows)"


def _sklearn_from_estimator(est, probe: np.ndarray | None) -> SklearnModel:
    if not hasattr(est, "predict"):
        raise LoadError(f"object of type {type(est).__name__} has no predict() method; not a scikit-learn model")
    n_features = getattr(est, "n_features_in_", None)
    if n_features is None and probe is not None:
        n_features = probe.shape[1]
    if n_features is None:
        raise LoadError("cannot tell the number of input features (no n_features_in_); pass an 'inputs' override")
    inputs = [TensorSpec("input", "FP64", [-1, int(n_features)])]
    x = probe if probe is not None else np.zeros((1, int(n_features)))
    x = np.asarray(x, dtype=np.float64)[:8]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pred = np.asarray(est.predict(x))
        except Exception as exc:
            raise LoadError(f"test prediction failed: {exc}") from exc
    outputs = []
    is_classifier = hasattr(est, "classes_")
    pshape = [-1] + list(pred.shape[1:])
    if is_classifier:
        outputs.append(TensorSpec("label", numpy_to_v2(pred.dtype), pshape, source="label"))
        if hasattr(est, "predict_proba"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    proba = np.asarray(est.predict_proba(x))
                outputs.append(
                    TensorSpec("probabilities", numpy_to_v2(proba.dtype), [-1] + list(proba.shape[1:]), source="probabilities")
                )
            except Exception:
                pass  # e.g. SVC(probability=False) exposes predict_proba but raises
    else:
        dt = numpy_to_v2(pred.dtype) if pred.dtype.kind in "biuf" else "BYTES"
        outputs.append(TensorSpec("prediction", dt, pshape, source="prediction"))
    return SklearnModel(est, inputs, outputs)


def _unpickle_sklearn(data: bytes, what: str, trust: Trust, checked: bool = False):
    """Check, then unpickle through joblib's unpickler with find_class held to the same allowlist."""
    if not checked:
        check_pickle(data, what, trust)
    try:
        from joblib.numpy_pickle import NumpyUnpickler
    except ImportError as exc:
        raise LoadError(f"joblib is not installed; cannot load {what}") from exc
    allow = trust.allowlist()

    class _Blocked(Exception):
        pass

    class _AllowlistUnpickler(NumpyUnpickler):
        # A second line behind the static check: the names are checked again as they are imported
        # (joblib routes nested object-array pickles through this find_class too).
        def find_class(self, module, name):
            pair = (module, name)
            if self.proto < 3 and self.fix_imports:
                if pair in _compat_pickle.NAME_MAPPING:
                    pair = _compat_pickle.NAME_MAPPING[pair]
                elif module in _compat_pickle.IMPORT_MAPPING:
                    pair = (_compat_pickle.IMPORT_MAPPING[module], name)
            if allow is not None and pair not in allow:
                raise _Blocked(picklescan.display_name(*pair))
            return super().find_class(module, name)

    try:
        _kind, stream = picklescan.open_stream(io.BytesIO(data))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _AllowlistUnpickler("", stream, True).load()
    except _Blocked as exc:
        raise UnsafeModelError(f"refusing to unpickle {what}: it imports {exc} outside the allowlist") from None
    except Exception as exc:
        raise LoadError(f"cannot load {what} as a scikit-learn pickle/joblib file: {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- ONNX


class OnnxModel(Model):
    framework = "onnx"

    def __init__(self, session, inputs, outputs):
        self.session = session
        super().__init__(inputs, outputs)
        self.platform = "onnxruntime_onnx"
        self._src_in = [t.source or t.name for t in inputs]
        self._src_out = {t.name: (t.source or t.name) for t in outputs}
        self._all_src_out = [self._src_out[n] for n in self.output_names]
        # The public run() re-validates names and ownership on every call; inputs are
        # already validated against the schema, so call the binding directly when present.
        inner = getattr(session, "_sess", None)
        self._run = inner.run if inner is not None and hasattr(inner, "run") else session.run

    def apply_overrides(self, inputs, outputs):
        super().apply_overrides(inputs, outputs)
        self._src_in = [t.source or t.name for t in self.inputs]
        self._src_out = {t.name: (t.source or t.name) for t in self.outputs}
        self._all_src_out = [self._src_out[n] for n in self.output_names]

    def predict(self, feeds, wanted=None):
        if len(self._src_in) == 1:
            ort_feeds = {self._src_in[0]: feeds[self.input_names[0]]}
        else:
            ort_feeds = {src: feeds[name] for src, name in zip(self._src_in, self.input_names)}
        if wanted is None or len(wanted) == len(self.output_names):
            names = self.output_names
            res = self._run(self._all_src_out, ort_feeds, None)
        else:
            names = wanted
            res = self._run([self._src_out[n] for n in wanted], ort_feeds, None)
        return dict(zip(names, res))


_ORT_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


def _onnx_session(data: bytes, what: str, threads: int):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise LoadError(f"onnxruntime is not installed; cannot load {what}") from exc
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(int(threads), 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Thread spinning burns CPU that other workers on the same core need.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise LoadError(f"cannot load {what} as an ONNX model: {type(exc).__name__}: {exc}") from exc


def _onnx_from_session(sess) -> OnnxModel:
    inputs, outputs = [], []
    for i in sess.get_inputs():
        if i.type not in _ORT_TYPES:
            raise LoadError(f"ONNX input {i.name!r} has unsupported type {i.type}")
        inputs.append(TensorSpec(i.name, _ORT_TYPES[i.type], dims_from_framework(i.shape), source=i.name))
    for o in sess.get_outputs():
        if o.type not in _ORT_TYPES:
            continue  # sequences/maps (e.g. ZipMap) are not served
        outputs.append(TensorSpec(o.name, _ORT_TYPES[o.type], dims_from_framework(o.shape), source=o.name))
    if not outputs:
        raise LoadError("ONNX model has no tensor outputs that can be served")
    return OnnxModel(sess, inputs, outputs)


# --------------------------------------------------------------------------- Keras / TensorFlow


def _import_tf(what: str, threads: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise LoadError(f"tensorflow is not installed; cannot load {what}") from exc
    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(int(threads), 1))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised
    return tf


def _tf_dtype_to_v2(dtype) -> str:
    name = getattr(dtype, "name", str(dtype))
    if name == "string":
        return "BYTES"
    return numpy_to_v2(np.dtype(name))


class KerasModel(Model):
    framework = "keras"

    def __init__(self, model, inputs, outputs):
        self.model = model
        super().__init__(inputs, outputs)
        self.platform = "tensorflow_keras"

    def predict(self, feeds, wanted=None):
        xs = [feeds[n] for n in self.input_names]
        res = self.model(xs[0] if len(xs) == 1 else xs, training=False)
        if isinstance(res, dict):
            res = [res[t.source or t.name] for t in self.outputs]
        elif not isinstance(res, (list, tuple)):
            res = [res]
        out = {t.name: np.asarray(r) for t, r in zip(self.outputs, res)}
        return {n: out[n] for n in (wanted or self.output_names)}


def _load_keras(path: Path, threads: int, trust: Trust, checked: bool = False) -> KerasModel:
    if not checked:
        check_format("keras", path, path.name, trust)
    _import_tf(str(path), threads)
    try:
        import keras
    except ImportError as exc:
        raise LoadError(f"keras is not installed; cannot load {path.name}") from exc
    try:
        # safe_mode: Keras itself refuses Lambda layers' bytecode unless the model is trusted.
        model = keras.models.load_model(str(path), compile=False, safe_mode=not trust.trust_model_code)
    except Exception as exc:
        raise LoadError(f"cannot load {path.name} as a Keras model: {type(exc).__name__}: {exc}") from exc
    inputs = []
    names_in = list(getattr(model, "input_names", None) or [])
    for i, t in enumerate(model.inputs):
        name = names_in[i] if i < len(names_in) else (t.name.split(":")[0] if len(model.inputs) > 1 else "input")
        if len(model.inputs) == 1:
            name = "input"
        inputs.append(TensorSpec(name, _tf_dtype_to_v2(t.dtype), dims_from_framework(t.shape), source=name))
    outputs = []
    for i, t in enumerate(model.outputs):
        name = "output" if len(model.outputs) == 1 else f"output_{i}"
        outputs.append(TensorSpec(name, _tf_dtype_to_v2(t.dtype), dims_from_framework(t.shape), source=name))
    return KerasModel(model, inputs, outputs)


class SavedModel(Model):
    framework = "tensorflow"

    def __init__(self, loaded, fn, inputs, outputs, tf):
        self.loaded = loaded  # keep a reference: the signature needs its variables alive
        self.fn = fn
        self.tf = tf
        super().__init__(inputs, outputs)
        self.platform = "tensorflow_savedmodel"

    def predict(self, feeds, wanted=None):
        kwargs = {(t.source or t.name): self.tf.constant(feeds[t.name]) for t in self.inputs}
        res = self.fn(**kwargs)
        out = {}
        for t in self.outputs:
            if wanted is None or t.name in wanted:
                out[t.name] = res[t.source or t.name].numpy()
        return out


def _load_savedmodel(path: Path, threads: int, trust: Trust, checked: bool = False) -> SavedModel:
    if not checked:
        check_format("tensorflow", path, path.name, trust)
    tf = _import_tf(str(path), threads)
    try:
        loaded = tf.saved_model.load(str(path))
        fn = loaded.signatures["serving_default"]
    except KeyError:
        raise LoadError(f"SavedModel {path.name} has no 'serving_default' signature") from None
    except Exception as exc:
        raise LoadError(f"cannot load {path.name} as a TensorFlow SavedModel: {type(exc).__name__}: {exc}") from exc
    _, kw = fn.structured_input_signature
    inputs = [
        TensorSpec(name, _tf_dtype_to_v2(spec.dtype), dims_from_framework(spec.shape.as_list()), source=name)
        for name, spec in sorted(kw.items())
    ]
    outputs = [
        TensorSpec(name, _tf_dtype_to_v2(spec.dtype), dims_from_framework(spec.shape.as_list()), source=name)
        for name, spec in sorted(fn.structured_outputs.items())
    ]
    return SavedModel(loaded, fn, inputs, outputs, tf)


# --------------------------------------------------------------------------- TorchScript


class TorchScriptModel(Model):
    framework = "torchscript"

    def __init__(self, module, inputs, outputs, torch):
        self.module = module
        self.torch = torch
        super().__init__(inputs, outputs)
        self.platform = "pytorch_torchscript"

    def predict(self, feeds, wanted=None):
        torch = self.torch
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names]
        with torch.inference_mode():
            res = self.module(*args)
        if isinstance(res, dict):
            res = [res[t.source or t.name] for t in self.outputs]
        elif not isinstance(res, (list, tuple)):
            res = [res]
        out = {t.name: r.detach().cpu().numpy() for t, r in zip(self.outputs, res)}
        return {n: out[n] for n in (wanted or self.output_names)}


def _torch(what: str, threads: int):
    try:
        import torch
    except ImportError as exc:
        raise LoadError(f"torch is not installed; cannot load {what}") from exc
    torch.set_num_threads(max(int(threads), 1))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    return torch


def _torchscript_module(data: bytes, what: str, threads: int, trust: Trust, checked: bool = False):
    if not checked:
        check_format("torchscript", data, what, trust)
    torch = _torch(what, threads)
    try:
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:
        raise LoadError(f"cannot load {what} as a TorchScript model: {type(exc).__name__}: {exc}") from exc
    module.eval()
    return module, torch


def _torchscript_schema(module, torch, probe: np.ndarray | None) -> TorchScriptModel:
    if probe is None:
        raise LoadError(
            "TorchScript models carry no input schema: give 'inputs' (and 'outputs') in the options, or a sample"
        )
    x = np.asarray(probe, dtype=np.float32)
    inputs = [TensorSpec("input", "FP32", [-1] + list(x.shape[1:]), source="input")]
    with torch.inference_mode():
        res = module(torch.from_numpy(x))
    if not isinstance(res, (list, tuple)):
        res = [res]
    outputs = []
    for i, r in enumerate(res):
        arr = r.detach().cpu().numpy()
        name = "output" if len(res) == 1 else f"output_{i}"
        outputs.append(TensorSpec(name, numpy_to_v2(arr.dtype), [-1] + list(arr.shape[1:]), source=name))
    return TorchScriptModel(module, inputs, outputs, torch)


# --------------------------------------------------------------------------- entry points


def _read(path: Path, framework: str) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise LoadError(f"{path} is a directory, but a {framework} model is a single file") from None
    except FileNotFoundError:
        raise LoadError(f"{path} does not exist") from None


def load_source(
    framework: str,
    path: str | os.PathLike,
    probe: np.ndarray | None = None,
    inputs: list[dict] | None = None,
    outputs: list[dict] | None = None,
    threads: int = 1,
    trust: Trust | None = None,
) -> Model:
    """Load a model from the build source and infer its schema (used by prepare).

    The safety check's record (for the manifest) is left in ``model.safety``.
    """
    trust = trust or Trust()
    path = Path(path)
    if framework != "tensorflow" and path.is_dir():
        raise LoadError(f"{path} is a directory, but a {framework} model is a single file")
    if not path.exists():
        raise LoadError(f"{path} does not exist")
    if framework == "sklearn":
        data = _read(path, framework)
        record = check_pickle(data, path.name, trust)
        est = _unpickle_sklearn(data, path.name, trust, checked=True)
        model = _sklearn_from_estimator(est, probe)
    elif framework == "onnx":
        data = _read(path, framework)
        record = check_format(framework, data, path.name, trust)
        model = _onnx_from_session(_onnx_session(data, path.name, threads))
    elif framework == "keras":
        record = check_format(framework, path, path.name, trust)
        model = _load_keras(path, threads, trust, checked=True)
    elif framework == "tensorflow":
        if not path.is_dir():
            raise LoadError(f"{path} is not a directory; a TensorFlow SavedModel is a directory")
        record = check_format(framework, path, path.name, trust)
        model = _load_savedmodel(path, threads, trust, checked=True)
    elif framework == "torchscript":
        data = _read(path, framework)
        record = check_format(framework, data, path.name, trust)
        module, torch = _torchscript_module(data, path.name, threads, trust, checked=True)
        if inputs:
            specs_in = [TensorSpec.from_json(o) for o in inputs]
            specs_out = [TensorSpec.from_json(o) for o in (outputs or [])]
            if not specs_out:
                if probe is None:
                    raise LoadError("TorchScript: give 'outputs' in the options or a sample")
                model = _torchscript_schema(module, torch, probe)
                model.apply_overrides(inputs, None)
                model.safety = record
                return model
            model = TorchScriptModel(module, specs_in, specs_out, torch)
            model.safety = record
            return model
        model = _torchscript_schema(module, torch, probe)
    else:
        raise LoadError(f"unknown framework {framework!r}")
    model.apply_overrides(inputs, outputs)
    model.safety = record
    return model


def _specs(manifest: dict, key: str) -> list[TensorSpec]:
    return [TensorSpec.from_json(o) for o in manifest[key]]


def load_served(model_dir: str | os.PathLike, manifest: dict, threads: int = 1) -> Model:
    """Verify checksums, check what the file could run, and load it with the manifest's schema."""
    model_dir = Path(model_dir)
    mf.verify_files(model_dir, manifest)
    try:
        trust = Trust.from_manifest(manifest)
    except ValueError as exc:
        raise LoadError(str(exc)) from None
    framework = manifest["framework"]
    entry = manifest["entrypoint"]
    inputs, outputs = _specs(manifest, "inputs"), _specs(manifest, "outputs")
    if framework == "sklearn":
        # Hash checked on the same bytes that get unpickled.
        data = mf.read_verified(model_dir, manifest, entry)
        est = _unpickle_sklearn(data, entry, trust)
        fast = bool((manifest.get("sklearn") or {}).get("label_from_probabilities"))
        return SklearnModel(est, inputs, outputs, label_from_proba=fast)
    if framework == "onnx":
        data = mf.read_verified(model_dir, manifest, entry)
        check_format("onnx", data, entry, trust)
        return OnnxModel(_onnx_session(data, entry, threads), inputs, outputs)
    if framework == "torchscript":
        data = mf.read_verified(model_dir, manifest, entry)
        module, torch = _torchscript_module(data, entry, threads, trust)
        return TorchScriptModel(module, inputs, outputs, torch)
    if framework == "keras":
        m = _load_keras(model_dir / entry, threads, trust)
        return KerasModel(m.model, inputs, outputs)
    if framework == "tensorflow":
        m = _load_savedmodel(model_dir / entry, threads, trust)
        return SavedModel(m.loaded, m.fn, inputs, outputs, m.tf)
    raise LoadError(f"unknown framework {framework!r}")


def coerce_inputs(model: Model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Feed a single 2-D array to a single-input model, in its declared dtype."""
    spec = model.inputs[0]
    return {spec.name: np.asarray(x, dtype=v2_to_numpy(spec.datatype))}
