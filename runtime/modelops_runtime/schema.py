"""Tensor schema helpers: V2 datatypes <-> numpy dtypes, and shape checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# V2 (Open Inference Protocol) datatype names -> numpy dtypes.
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

NUMPY_TO_V2: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}

# Broad kinds used to decide whether a request datatype can feed a model input.
_KIND = {
    "BOOL": "bool",
    "BYTES": "bytes",
    "FP16": "float",
    "FP32": "float",
    "FP64": "float",
}


def v2_kind(datatype: str) -> str:
    if datatype in _KIND:
        return _KIND[datatype]
    return "int"


def numpy_to_v2(dtype: Any) -> str:
    dt = np.dtype(dtype)
    if dt.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return NUMPY_TO_V2[dt.name]
    except KeyError:
        raise ValueError(f"unsupported numpy dtype {dt.name}") from None


def v2_to_numpy(datatype: str) -> np.dtype:
    try:
        return V2_TO_NUMPY[datatype]
    except KeyError:
        raise ValueError(f"unknown datatype {datatype!r}") from None


def request_datatype_compatible(request_dt: str, model_dt: str) -> bool:
    """Can data declared as ``request_dt`` be fed to an input of ``model_dt``?

    Same datatype always works. Floats of another width are converted to the
    model's width; integers may feed integer or float inputs. Floats never
    silently become integers, and BYTES/BOOL only match themselves.
    """
    if request_dt == model_dt:
        return True
    rk, mk = v2_kind(request_dt), v2_kind(model_dt)
    if rk == "float":
        return mk == "float"
    if rk == "int":
        return mk in ("int", "float")
    return False


@dataclass
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]
    # Name of the tensor inside the framework, when it differs from the served name.
    source: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
        if self.source and self.source != self.name:
            out["source"] = self.source
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "TensorSpec":
        if not isinstance(obj, dict):
            raise ValueError(f"tensor spec must be an object, got {obj!r}")
        try:
            name = obj["name"]
            datatype = obj["datatype"]
            shape = obj["shape"]
        except KeyError as exc:
            raise ValueError(f"tensor spec {obj!r} is missing {exc.args[0]!r}") from None
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor name must be a non-empty string, got {name!r}")
        v2_to_numpy(datatype)
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= -1 for d in shape):
            raise ValueError(f"shape of {name!r} must be a list of integers >= -1, got {shape!r}")
        return cls(name=name, datatype=datatype, shape=list(shape), source=obj.get("source"))

    def shape_matches(self, shape) -> bool:
        if len(shape) != len(self.shape):
            return False
        for want, got in zip(self.shape, shape):
            if want != -1 and want != got:
                return False
        return True


def dims_from_framework(shape) -> list[int]:
    """Convert a framework shape (None / symbolic names for unknown dims) to V2 (-1)."""
    out = []
    for d in shape:
        if isinstance(d, (int, np.integer)) and int(d) >= 0:
            out.append(int(d))
        else:
            out.append(-1)
    return out
