"""Open Inference Protocol (KServe V2) request decoding and response encoding.

Pure functions over bytes and numpy arrays, independent of the HTTP layer.
Supports JSON tensors (flat or nested row-major ``data``) and the binary
tensor data extension (``Inference-Header-Content-Length``, per-tensor
``binary_data_size``, ``binary_data``/``binary_data_output`` parameters) used
by tritonclient by default.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import orjson

from .schema import V2_TO_NUMPY, request_datatype_compatible, v2_kind

_NUMPY_OPT = orjson.OPT_SERIALIZE_NUMPY
_V2_NAMES = {
    np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "UINT8", np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32", np.dtype(np.uint64): "UINT64", np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16", np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
}


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def bad(msg: str) -> RequestError:
    return RequestError(400, msg)


def loads_object(body: bytes, what: str = "request body") -> dict:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad(f"{what} is not valid JSON ({exc}); note that NaN and Infinity are not JSON") from None
    if not isinstance(obj, dict):
        raise bad(f"{what} must be a JSON object")
    return obj


_JSON_TYPE = {type(None): "null", bool: "true/false", int: "an integer", float: "a number", str: "a string",
              list: "an array", dict: "an object"}


def json_type(value) -> str:
    """How a decoded JSON value is called in an error message."""
    return _JSON_TYPE.get(type(value), type(value).__name__)


def _flag(value, field: str) -> bool:
    if value is None:
        return False
    if type(value) is not bool:
        raise bad(f"{field} must be true or false, not {json_type(value)}")
    return value


def _object(value, field: str):
    if value is not None and not isinstance(value, dict):
        raise bad(f"{field} must be an object, not {json_type(value)}")
    return value


def header_length(raw: bytes | None) -> int | None:
    """The Inference-Header-Content-Length header as a number (None when absent)."""
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 18:
        raise bad(f"Inference-Header-Content-Length must be a non-negative integer, not {raw[:40].decode('latin-1')!r}")
    return int(text)


def datatype_of(arr: np.ndarray) -> str:
    name = _V2_NAMES.get(arr.dtype)
    if name is None:
        return "BYTES"
    return name


class Decoder:
    """Turns request bodies into model feeds, checked against the model schema."""

    def __init__(self, model, allow_non_finite: bool = False, max_batch_rows: int = 0):
        self.model = model
        self.specs = {t.name: t for t in model.inputs}
        self.dtypes = {t.name: V2_TO_NUMPY[t.datatype] for t in model.inputs}
        self.output_set = set(model.output_names)
        self.allow_non_finite = allow_non_finite
        self.max_batch_rows = max_batch_rows
        self.single = model.inputs[0] if len(model.inputs) == 1 else None

    # ------------------------------------------------------------------ helpers
    def _check_values(self, where: str, arr: np.ndarray, spec) -> np.ndarray:
        if arr.size == 0:
            raise bad(f"{where} is empty (shape {list(arr.shape)})")
        if not spec.shape_matches(arr.shape):
            raise bad(f"{where} has shape {list(arr.shape)}, model expects {spec.shape} (-1 = any size)")
        if self.max_batch_rows and arr.ndim and arr.shape[0] > self.max_batch_rows:
            raise RequestError(413, f"{where} has {arr.shape[0]} rows (shape[0]); the limit is {self.max_batch_rows}")
        if not self.allow_non_finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise bad(f"{where}: data contains NaN or infinite values (or values too large for {spec.datatype})")
        return arr

    def _from_json_data(self, where: str, data, req_dt: str, shape: list, spec) -> np.ndarray:
        target = self.dtypes[spec.name]
        kind = v2_kind(spec.datatype)
        if kind == "bytes":
            flat = _flatten(data)
            arr = np.empty(len(flat), dtype=object)
            for i, v in enumerate(flat):
                if not isinstance(v, str):
                    raise bad(f"{where} is BYTES: every element of data must be a string, not {json_type(v)}")
                arr[i] = v
        else:
            try:
                arr = np.array(data)
            except (ValueError, TypeError, RecursionError):
                raise bad(f"{where}: data is not a regular (rectangular) array of numbers") from None
            k = arr.dtype.kind
            if kind == "bool":
                if k != "b":
                    raise bad(f"{where} is BOOL: data must be true/false values")
            elif k not in "iuf":
                if k == "b" and arr.size:
                    raise bad(f"{where} is {spec.datatype}: data must be numbers, not true/false")
                if k == "O" and arr.size and all(type(v) in (int, float) for v in arr.reshape(-1)):
                    raise bad(f"{where}: data values do not fit {spec.datatype}")
                if arr.size:
                    raise bad(f"{where} is {spec.datatype}: data must hold only numbers")
                arr = arr.astype(np.float64)
            if v2_kind(req_dt) == "int" and k == "f":
                raise bad(f"{where} is declared {req_dt} but data holds non-integer numbers")
            if kind == "int" and k == "f":
                raise bad(f"{where} expects {spec.datatype}; data holds non-integer numbers")
            # Overflow in these casts gives inf, which the finite check reports; the worker
            # runs with np.seterr(all="ignore") so no warning machinery is involved.
            try:
                declared = V2_TO_NUMPY[req_dt]
                if declared != target and declared.kind == "f" and declared.itemsize < arr.dtype.itemsize:
                    arr = arr.astype(declared)  # values must fit the datatype the client declared
                arr = arr.astype(target, copy=False)
            except (OverflowError, ValueError):
                raise bad(f"{where}: data values do not fit {spec.datatype}") from None
        n = math.prod(shape)
        if arr.size != n:
            raise bad(f"{where}: shape {shape} needs {n} values, data has {arr.size}")
        if arr.shape != tuple(shape):
            arr = arr.reshape(shape)
        return arr

    def _from_binary(self, where: str, raw: memoryview, req_dt: str, shape: list, spec) -> np.ndarray:
        n = math.prod(shape)
        if req_dt == "BYTES":
            if v2_kind(spec.datatype) != "bytes":
                raise bad(f"{where} expects {spec.datatype}, datatype is BYTES")
            items, pos = [], 0
            while pos < len(raw):
                if pos + 4 > len(raw):
                    raise bad(f"{where}: truncated BYTES element in the binary data")
                (ln,) = struct.unpack_from("<I", raw, pos)
                pos += 4
                if pos + ln > len(raw):
                    raise bad(f"{where}: truncated BYTES element in the binary data")
                items.append(bytes(raw[pos : pos + ln]).decode("utf-8", "replace"))
                pos += ln
            if len(items) != n:
                raise bad(f"{where}: shape {shape} needs {n} elements, binary data has {len(items)}")
            arr = np.empty(n, dtype=object)
            arr[:] = items
            return arr.reshape(shape)
        src = V2_TO_NUMPY[req_dt]
        if len(raw) != n * src.itemsize:
            raise bad(f"{where}: shape {shape} of {req_dt} needs {n * src.itemsize} bytes, got {len(raw)} (binary_data_size)")
        arr = np.frombuffer(raw, dtype=src.newbyteorder("<")).reshape(shape)
        target = self.dtypes[spec.name]
        if arr.dtype != target:
            arr = arr.astype(target)
        return arr

    # ------------------------------------------------------------------ V2 infer
    def decode_infer(self, body: bytes, header_length: int | None):
        """Returns (request id or None, feeds, wanted outputs or None, binary output names).

        Every field is checked for its JSON type before it is used; an error names the
        field by its path in the request (``inputs[0].datatype``)."""
        binary_tail = None
        if header_length is not None:
            if header_length < 0 or header_length > len(body):
                raise bad(f"Inference-Header-Content-Length {header_length} does not fit the body of {len(body)} bytes")
            binary_tail = memoryview(body)[header_length:]
            body = body[:header_length]
            req = loads_object(body, f"the JSON part of the body (its first {header_length} bytes, per Inference-Header-Content-Length)")
        else:
            req = loads_object(body)
        req_id = req.get("id")
        if req_id is not None and not isinstance(req_id, str):
            raise bad(f"'id' must be a string, not {json_type(req_id)}")
        params = _object(req.get("parameters"), "'parameters'")
        default_binary = _flag(params.get("binary_data_output"), "parameters.binary_data_output") if params else False
        inputs = req.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise bad(f"'inputs' must be a non-empty list of tensors, not {json_type(inputs) if inputs != [] else 'an empty list'}")
        feeds = {}
        offset = 0
        for i, t in enumerate(inputs):
            at = f"inputs[{i}]"
            if not isinstance(t, dict):
                raise bad(f"{at} must be an object with name, shape, datatype and data, not {json_type(t)}")
            name = t.get("name")
            if not isinstance(name, str):
                raise bad(f"{at} needs a string 'name', not {json_type(name)}")
            spec = self.specs.get(name)
            if spec is None:
                raise bad(f"unknown input '{name}' in {at}.name; model inputs are {list(self.specs)}")
            if name in feeds:
                raise bad(f"input '{name}' is given twice ({at}.name)")
            where = f"input '{name}'"
            shape = t.get("shape")
            if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
                raise bad(f"{where}: 'shape' ({at}.shape) must be a list of non-negative integers")
            req_dt = t.get("datatype")
            if not isinstance(req_dt, str) or req_dt not in V2_TO_NUMPY:
                shown = repr(req_dt) if isinstance(req_dt, str) else json_type(req_dt)
                raise bad(f"{where}: unknown datatype {shown} in {at}.datatype; use one of {', '.join(V2_TO_NUMPY)}")
            if not request_datatype_compatible(req_dt, spec.datatype):
                raise bad(f"{where} has datatype {req_dt}, model expects {spec.datatype}")
            tparams = _object(t.get("parameters"), f"{at}.parameters")
            size = tparams.get("binary_data_size") if tparams else None
            if size is not None:
                field = f"{at}.parameters.binary_data_size"
                if binary_tail is None:
                    raise bad(f"{where}: {field} is set but the request has no Inference-Header-Content-Length")
                if type(size) is not int or size < 0 or offset + size > len(binary_tail):
                    shown = size if type(size) is int else json_type(size)
                    raise bad(f"{where}: {field} {shown} does not fit the body (its binary part has {len(binary_tail) - offset} bytes left)")
                arr = self._from_binary(where, binary_tail[offset : offset + size], req_dt, shape, spec)
                offset += size
            else:
                if "data" not in t:
                    raise bad(f"{where} has no 'data' ({at}.data)")
                arr = self._from_json_data(where, t["data"], req_dt, shape, spec)
            feeds[name] = self._check_values(where, arr, spec)
        if len(feeds) != len(self.specs):
            missing = [n for n in self.specs if n not in feeds]
            raise bad(f"missing input(s) {missing} in 'inputs'")
        wanted = None
        binary: set[str] = set()
        outs = req.get("outputs")
        if outs is not None:
            if not isinstance(outs, list):
                raise bad(f"'outputs' must be a list, not {json_type(outs)}")
            wanted = []
            for i, o in enumerate(outs):
                at = f"outputs[{i}]"
                if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                    raise bad(f"each entry of 'outputs' must be an object with a string 'name' ({at}.name)")
                oname = o["name"]
                if oname not in self.output_set:
                    raise bad(f"unknown output '{oname}' in {at}.name; model outputs are {self.model.output_names}")
                if oname not in wanted:
                    wanted.append(oname)
                op = _object(o.get("parameters"), f"{at}.parameters")
                flag = _flag(op.get("binary_data"), f"{at}.parameters.binary_data") if op and "binary_data" in op else default_binary
                if flag:
                    binary.add(oname)
            if not wanted:
                wanted = None
        elif default_binary:
            binary = set(self.model.output_names)
        return req_id, feeds, wanted, binary

    # ------------------------------------------------------------------ /predict
    def decode_instances(self, body: bytes) -> dict:
        if self.single is None:
            raise bad("/predict only serves single-input models; use the V2 infer endpoint")
        req = loads_object(body)
        inst = req.get("instances")
        if inst is None:
            inst = req.get("inputs")
        if not isinstance(inst, list) or not inst:
            raise bad(f"'instances' must be a non-empty list of input rows, not {json_type(inst) if inst != [] else 'an empty list'}")
        spec = self.single
        arr = self._from_json_data("'instances'", inst, spec.datatype, _shape_of(inst, spec), spec)
        return {spec.name: self._check_values("'instances'", arr, spec)}


def _shape_of(inst: list, spec) -> list:
    """Shape of nested lists (following first elements), checked for rank against the spec."""
    shape = []
    cur = inst
    while isinstance(cur, list):
        shape.append(len(cur))
        if not cur:
            break
        cur = cur[0]
    if len(shape) != len(spec.shape):
        raise bad(
            f"'instances' have {len(shape)} dimension(s), model input '{spec.name}' expects "
            f"{len(spec.shape)} (shape {spec.shape}, first = batch)"
        )
    return shape


def _flatten(data) -> list:
    if not isinstance(data, list):
        return [data]
    out = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _json_data(arr: np.ndarray):
    if arr.dtype.kind in "biuf" and arr.dtype != np.float16:
        return np.ascontiguousarray(arr).reshape(-1)
    flat = arr.reshape(-1).tolist()
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else (v if isinstance(v, (int, float, bool)) else str(v)) for v in flat]


def _binary_data(arr: np.ndarray) -> bytes:
    if arr.dtype.kind in "biuf":
        return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    parts = []
    for v in arr.reshape(-1).tolist():
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def encode_infer(model_name: str, model_version: str, req_id, results: dict, order, binary: set):
    """Returns (body, json header length or None)."""
    outputs = []
    tails = []
    for name in order:
        arr = results[name]
        if not isinstance(arr, np.ndarray):
            arr = np.asarray(arr)
        if arr.dtype.kind in "US":
            arr = arr.astype(object)
        entry = {"name": name, "datatype": datatype_of(arr), "shape": list(arr.shape)}
        if name in binary:
            raw = _binary_data(arr)
            entry["parameters"] = {"binary_data_size": len(raw)}
            tails.append(raw)
        else:
            entry["data"] = _json_data(arr)
        outputs.append(entry)
    resp = {"model_name": model_name, "model_version": model_version, "outputs": outputs}
    if req_id is not None:
        resp["id"] = req_id
    head = orjson.dumps(resp, option=_NUMPY_OPT)
    if tails:
        return head + b"".join(tails), len(head)
    return head, None


def encode_predictions(arr: np.ndarray) -> bytes:
    if arr.dtype.kind in "US":
        arr = arr.astype(object)
    data = _json_data(arr) if arr.dtype.kind not in "biuf" else np.ascontiguousarray(arr)
    if isinstance(data, np.ndarray) and data.dtype == np.float16:
        data = data.astype(np.float32)
    return orjson.dumps({"predictions": data}, option=_NUMPY_OPT)
