"""Checking a model against the sample in the options / manifest."""

from __future__ import annotations

import warnings

import numpy as np

from .schema import v2_to_numpy


class SampleMismatch(Exception):
    pass


def _short(values, limit: int = 10) -> str:
    lst = np.asarray(values).tolist() if not isinstance(values, list) else values
    if isinstance(lst, list) and len(lst) > limit:
        return repr(lst[:limit])[:-1] + f", ... ({len(lst)} values)]"
    return repr(lst)


def validate_sample(sample) -> dict | None:
    if sample is None:
        return None
    if not isinstance(sample, dict):
        raise ValueError("sample must be an object with 'instances' (and optionally 'expected', 'tolerance')")
    unknown = set(sample) - {"instances", "expected", "tolerance", "output"}
    if unknown:
        raise ValueError(f"sample has unknown key(s) {sorted(unknown)}")
    inst = sample.get("instances")
    if not isinstance(inst, list) or not inst:
        raise ValueError("sample.instances must be a non-empty list of input rows")
    tol = sample.get("tolerance", 0)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or tol < 0:
        raise ValueError(f"sample.tolerance must be a number >= 0, got {tol!r}")
    out = {"instances": inst}
    if "expected" in sample:
        if not isinstance(sample["expected"], list) or len(sample["expected"]) != len(inst):
            raise ValueError("sample.expected must be a list with one entry per instance")
        out["expected"] = sample["expected"]
    out["tolerance"] = float(tol)
    if "output" in sample:
        out["output"] = str(sample["output"])
    return out


def sample_array(model, sample: dict) -> np.ndarray:
    spec = model.inputs[0]
    try:
        return np.asarray(sample["instances"], dtype=v2_to_numpy(spec.datatype))
    except (TypeError, ValueError) as exc:
        raise SampleMismatch(f"sample instances cannot be converted to {spec.datatype}: {exc}") from None


def run_sample(model, sample: dict) -> np.ndarray:
    if len(model.inputs) != 1:
        raise SampleMismatch("samples are only supported for single-input models")
    x = sample_array(model, sample)
    spec = model.inputs[0]
    if not spec.shape_matches(x.shape):
        raise SampleMismatch(f"sample instances have shape {list(x.shape)}, model input {spec.name!r} expects {spec.shape}")
    out_name = sample.get("output") or model.output_names[0]
    if out_name not in model.output_names:
        raise SampleMismatch(f"sample.output {out_name!r} is not a model output ({model.output_names})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(model.predict({spec.name: x}, [out_name])[out_name])


def compare(got: np.ndarray, expected, tolerance: float) -> None:
    """Raise SampleMismatch unless ``got`` equals ``expected`` (within ``tolerance`` for numbers)."""
    exp = np.asarray(expected)
    got = np.asarray(got)
    if got.shape != exp.shape and got.size == exp.size:
        got = got.reshape(exp.shape)
    ok = False
    if got.shape == exp.shape:
        if exp.dtype.kind in "biuf" and got.dtype.kind in "biuf":
            g, e = got.astype(np.float64), exp.astype(np.float64)
            ok = bool(np.array_equal(g, e)) if tolerance == 0 else bool(np.allclose(g, e, rtol=0.0, atol=tolerance))
        else:
            ok = bool(np.array_equal(got.astype(object).astype(str), exp.astype(object).astype(str)))
    if not ok:
        how = "" if tolerance == 0 else f" (tolerance {tolerance})"
        raise SampleMismatch(f"sample output {_short(got)} != expected {_short(exp)}{how}")


def check_sample(model, sample: dict | None) -> np.ndarray | None:
    if not sample:
        return None
    got = run_sample(model, sample)
    if "expected" in sample:
        compare(got, sample["expected"], sample.get("tolerance", 0.0))
    return got
