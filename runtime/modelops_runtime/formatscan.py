"""Static checks of the non-pickle formats: what could they execute when loaded or served?

Standard library only (the packager on the controller loads this file from the runtime
directory, as it does ``picklescan.py``). Each check returns a :class:`FormatReport`; a report
with problems means "refuse unless the model is trusted explicitly" (``trust_model_code``).

What each format can run, and what is refused:

* **Keras** ``.keras`` / ``.h5``: a model is rebuilt from a JSON config that names classes by
  module. A ``Lambda`` layer carries marshalled Python bytecode, which runs; a config can also name
  any importable callable by module (CVE-2025-1550) or a Keras utility that downloads files
  (``get_file``, CVE-2025-8747) or loads another SavedModel from a path (``TFSMLayer``). Refused:
  Lambda layers and Python lambdas, ``TFSMLayer``, any object from a module outside ``keras``,
  and anything from ``keras.utils``/``keras.saving``. The runtime also loads with Keras'
  ``safe_mode=True``. ``.h5`` configs are read with h5py when it is importable, otherwise by a
  byte search of the file for the same JSON patterns (the config is one HDF5 string attribute,
  stored unfiltered).
* **TensorFlow SavedModel**: a graph of TensorFlow ops; no Python is stored. Ops run at load
  (initialisers) and at every request. Refused: ops that call back into Python
  (``PyFunc``, ``EagerPyFunc``, ``PyFuncStateless``), that write files (``WriteFile``,
  ``SaveV2`` outside the saver, summary writers, ``PrintV2`` to ``file://``, dataset
  save/snapshot/cache...), that read files by path (``ReadFile``, ``MatchingFiles``, record
  readers and file datasets, ``RestoreV2`` outside the saver...), or that talk to other
  processes (tf.data service, RPC). The saver's own save/restore functions (reached only from
  the SaveDef's nodes) may use ``SaveV2``/``RestoreV2``/``MergeV2Checkpoints``.
  ``saved_model.pbtxt`` is not parsed: refused unless trusted.
* **TorchScript**: ``torch.jit.load`` compiles the TorchScript source in ``code/`` (a
  Python-like language with no access to Python modules, files or processes; it can call only
  operators registered in torch) and runs scripted ``__setstate__`` methods; its pickles are read
  by torch's C++ unpickler, which resolves only torch's own types. Refused: the operators that
  reach files or other processes (``from_file``, and any ``torch.ops`` namespace outside
  aten/prim/quantized/mkldnn/onednn/sparse, e.g. ``c10d`` collectives, ``debugprims``).
  A plain ``torch.save`` pickle is never TorchScript (refused by detection).
* **ONNX**: ONNX Runtime kernels only, no code. But a tensor may keep its data in an
  "external data" file named by a relative path, and a model loaded from bytes (as the
  runtime loads it) resolves that path against the working directory: a file of the model's
  choosing becomes its weights. The packager ships single files, so external data is never
  legitimate here: refused, whatever the trust.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile

__all__ = ["FormatReport", "check_keras", "check_onnx", "check_savedmodel", "check_torchscript"]


class FormatReport:
    def __init__(self, fmt: str, name: str):
        self.format = fmt
        self.name = name
        self.problems = []
        self.details = {}
        self.corrupt = None  # the file is not even a valid container of its format

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if problem not in self.problems:
            self.problems.append(problem)

    def message(self) -> str:
        if self.ok:
            return "%s: nothing found that runs code or touches files" % self.name
        if self.format == "onnx":
            return ("%s reads other files when it is loaded: %s; refused (save the model with its weights inside, "
                    "onnx.save(model, path, save_as_external_data=False))" % (self.name, "; ".join(self.problems)))
        return ("%s can run code or touch files when it is loaded or served: %s; refused "
                "(set trust_model_code: true for this model if you trust the file)"
                % (self.name, "; ".join(self.problems)))

    def to_json(self) -> dict:
        out = {"format": self.format, "problems": list(self.problems)}
        out.update(self.details)
        return out


# --------------------------------------------------------------------------- Keras

_LAMBDA_CLASSES = {"Lambda", "__lambda__"}
_PATH_CLASSES = {"TFSMLayer"}
_KERAS_BAD_MODULES = ("keras.utils", "keras.src.utils", "keras.saving", "keras.src.saving")


def _keras_module_ok(module: str) -> bool:
    if module != "keras" and not module.startswith("keras."):
        return False
    return not any(module == bad or module.startswith(bad + ".") for bad in _KERAS_BAD_MODULES)


def _walk_keras_config(node, report: FormatReport, path: str = "config") -> None:
    stack = [(node, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            cls = value.get("class_name")
            label = value.get("config", {}).get("name") if isinstance(value.get("config"), dict) else None
            named = "%s %r" % (cls, label) if label else str(cls)
            if cls in _LAMBDA_CLASSES:
                report.add("%s holds a Python function (marshalled bytecode)" % named)
            if value.get("function_type") == "lambda":
                report.add("a Lambda layer holds a Python lambda (marshalled bytecode)")
            if cls in _PATH_CLASSES:
                report.add("%s loads another model from a path" % named)
            module = value.get("module")
            if isinstance(module, str) and cls is not None and not _keras_module_ok(module):
                report.add("%s.%s is imported from outside Keras' layers and models" % (module, cls))
            for key, item in value.items():
                stack.append((item, "%s.%s" % (where, key)))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                stack.append((item, "%s[%d]" % (where, i)))


_H5_PATTERNS = (
    (re.compile(rb'"class_name"\s*:\s*"(Lambda|__lambda__)"'), "a Lambda layer holds a Python function (marshalled bytecode)"),
    (re.compile(rb'"function_type"\s*:\s*"lambda"'), "a Lambda layer holds a Python lambda (marshalled bytecode)"),
    (re.compile(rb'"class_name"\s*:\s*"TFSMLayer"'), "TFSMLayer loads another model from a path"),
)
_H5_MODULE = re.compile(rb'"module"\s*:\s*"([^"]*)"')


def check_keras(path) -> FormatReport:
    """Keras .keras (zip with config.json) or .h5 (HDF5 with a model_config attribute)."""
    path = str(path)
    report = FormatReport("keras", os.path.basename(path))
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json").decode("utf-8"))
        except (KeyError, ValueError, zipfile.BadZipFile, OSError) as exc:
            report.add("config.json cannot be read (%s)" % exc)
            return report
        report.details["config"] = "config.json"
        _walk_keras_config(config, report)
        return report
    config_text = None
    try:
        import h5py  # noqa: PLC0415 - optional: present in the runtime's Keras images
    except ImportError:
        h5py = None
    if h5py is not None:
        try:
            with h5py.File(path, "r") as handle:
                raw = handle.attrs.get("model_config")
            if raw is None:
                report.details["config"] = "none (weights only)"
                return report
            config_text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        except (OSError, ValueError) as exc:
            report.add("the HDF5 file cannot be read (%s)" % exc)
            return report
        report.details["config"] = "model_config (h5py)"
        try:
            _walk_keras_config(json.loads(config_text), report)
        except ValueError as exc:
            report.add("model_config is not JSON (%s)" % exc)
        return report
    # No h5py (e.g. on the controller): search the file's bytes for the config's JSON patterns.
    report.details["config"] = "model_config (byte search, h5py not installed)"
    with open(path, "rb") as handle:
        data = handle.read()
    for pattern, problem in _H5_PATTERNS:
        if pattern.search(data):
            report.add(problem)
    for match in _H5_MODULE.finditer(data):
        module = match.group(1).decode("utf-8", "replace")
        if not _keras_module_ok(module):
            report.add("an object is imported from module %r, outside Keras' layers and models" % module)
    return report


# --------------------------------------------------------------------------- protobuf (just enough)

class _ProtoError(ValueError):
    pass


def _varint(data, pos):
    result, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _ProtoError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _skip_group(data, pos, field):
    """Skip a (deprecated) group up to its END_GROUP, as protobuf parsers skip unknown groups."""
    depth = 1
    while depth:
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            _value, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            pos += length
        elif wire == 5:
            pos += 4
        elif wire == 3:
            depth += 1
        elif wire == 4:
            depth -= 1
            if depth == 0 and key >> 3 != field:
                raise _ProtoError("mismatched end of group")
        else:
            raise _ProtoError("invalid wire type %d" % wire)
        if pos > len(data):
            raise _ProtoError("truncated message")
    return pos


def _fields(data):
    """(field number, wire type, value) of one message; length-delimited values are memoryviews."""
    data = memoryview(data)
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        elif wire == 3:
            pos = _skip_group(data, pos, field)
            continue
        else:
            raise _ProtoError("invalid wire type %d" % wire)
        if pos > len(data):
            raise _ProtoError("truncated message")
        yield field, wire, value


def _sub(data, number):
    return [v for f, w, v in _fields(data) if f == number and w == 2]


def _text(value) -> str:
    return bytes(value).decode("utf-8", "replace")


def _attr_funcs(attr_value, out):
    """Function names referenced by an AttrValue (func = 10, list.func = 9), recursively."""
    for f, w, v in _fields(attr_value):
        if w != 2:
            continue
        if f == 10:
            _name_attr_list(v, out)
        elif f == 1:
            for lf, lw, lv in _fields(v):
                if lf == 9 and lw == 2:
                    _name_attr_list(lv, out)


def _name_attr_list(data, out):
    for f, w, v in _fields(data):
        if f == 1 and w == 2:
            out.add(_text(v))
        elif f == 2 and w == 2:  # map<string, AttrValue> entry
            for ef, ew, ev in _fields(v):
                if ef == 2 and ew == 2:
                    _attr_funcs(ev, out)


class _Node:
    __slots__ = ("name", "op", "funcs", "attrs")

    def __init__(self, data):
        self.name, self.op, self.funcs, self.attrs = "", "", set(), {}
        for f, w, v in _fields(data):
            if f == 1 and w == 2:
                self.name = _text(v)
            elif f == 2 and w == 2:
                self.op = _text(v)
            elif f == 5 and w == 2:
                key, value = "", None
                for ef, ew, ev in _fields(v):
                    if ef == 1 and ew == 2:
                        key = _text(ev)
                    elif ef == 2 and ew == 2:
                        value = ev
                if value is not None:
                    self.attrs[key] = value
                    _attr_funcs(value, self.funcs)

    def attr_string(self, key):
        value = self.attrs.get(key)
        if value is None:
            return None
        for f, w, v in _fields(value):
            if f == 2 and w == 2:
                return _text(v)
        return None


# --------------------------------------------------------------------------- SavedModel

_TF_PYTHON = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
_TF_WRITE = {
    "WriteFile", "Save", "SaveSlices", "SaveV2", "MergeV2Checkpoints", "DatasetToTFRecord",
    "ExperimentalDatasetToTFRecord", "SaveDataset", "SaveDatasetV2", "SnapshotDataset", "SnapshotDatasetV2",
    "SnapshotChunkDataset", "SnapshotNestedDatasetReader", "DistributedSave", "CacheDataset", "CacheDatasetV2",
    "CreateSummaryFileWriter", "CreateSummaryDbWriter", "SummaryWriter", "WriteSummary", "WriteScalarSummary",
    "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary", "WriteRawProtoSummary",
    "ImportEvent", "FlushSummaryWriter", "CloseSummaryWriter", "DebugIdentityV2", "DebugIdentityV3",
}
_TF_READ = {
    "ReadFile", "MatchingFiles", "MatchingFilesDataset", "ExperimentalMatchingFilesDataset", "ImmutableConst",
    "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2",
    "TextLineDataset", "LoadDataset", "LMDBDataset", "ExperimentalLMDBDataset", "SqlDataset",
    "ExperimentalSqlDataset", "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2",
    "TFRecordReader", "TFRecordReaderV2", "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "LMDBReader",
    "RecordInput", "Restore", "RestoreSlice", "RestoreV2", "LoadAndRemapMatrix",
}
_TF_NETWORK = {
    "DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3", "DataServiceDatasetV4",
    "RegisterDataset", "RegisterDatasetV2", "RpcClient", "RpcCall", "RpcServer", "RpcServerStart",
    "RpcServerRegister", "RpcGetValue", "RpcCheckStatus", "DeleteRpcFutureResource",
}
_TF_SAVER_OK = {"Save", "SaveSlices", "SaveV2", "MergeV2Checkpoints", "Restore", "RestoreSlice", "RestoreV2"}
# descriptor_source of the proto ops may name a file; "local://" (the default) reads none.
_TF_PROTO_OPS = {"DecodeProtoV2", "EncodeProto"}


def _op_problem(op: str, node: _Node) -> str | None:
    if op in _TF_PYTHON:
        return "%s calls back into Python" % op
    if op == "PrintV2":
        stream = node.attr_string("output_stream") or ""
        return "PrintV2 writes to %s" % stream if stream.startswith("file://") else None
    if op in _TF_PROTO_OPS:
        source = node.attr_string("descriptor_source") or "local://"
        return None if source == "local://" else "%s reads the descriptor file %r" % (op, source)
    if op in _TF_WRITE:
        return "%s writes files" % op
    if op in _TF_READ:
        return "%s reads files by path" % op
    if op in _TF_NETWORK:
        return "%s talks to other processes" % op
    return None


def _check_meta_graph(meta, report: FormatReport) -> None:
    graph = _sub(meta, 2)
    saver = _sub(meta, 3)
    objects = _sub(meta, 7)
    main_nodes, functions = [], {}
    for g in graph:
        for f, w, v in _fields(g):
            if f == 1 and w == 2:
                main_nodes.append(_Node(v))
            elif f == 2 and w == 2:
                for lf, lw, lv in _fields(v):
                    if lf == 1 and lw == 2:  # FunctionDef
                        name, nodes = "", []
                        for ff, fw, fv in _fields(lv):
                            if ff == 1 and fw == 2:  # OpDef signature
                                for sf, sw, sv in _fields(fv):
                                    if sf == 1 and sw == 2:
                                        name = _text(sv)
                            elif ff == 3 and fw == 2:
                                nodes.append(_Node(fv))
                        functions[name] = nodes
    saver_nodes = set()
    for s in saver:
        for f, w, v in _fields(s):
            if f in (2, 3) and w == 2:
                saver_nodes.add(_text(v).split(":", 1)[0])
    object_funcs = set()
    for o in objects:
        for f, w, v in _fields(o):
            if f == 2 and w == 2:  # concrete_functions map entry
                for ef, ew, ev in _fields(v):
                    if ef == 1 and ew == 2:
                        object_funcs.add(_text(ev))

    def callees(nodes):
        out = set()
        for node in nodes:
            out |= node.funcs
            if node.op in functions:
                out.add(node.op)
        return out

    def reach(roots):
        seen, todo = set(), [r for r in roots if r in functions]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo.extend(c for c in callees(functions[name]) if c in functions and c not in seen)
        return seen

    saver_reach = reach(callees([n for n in main_nodes if n.name in saver_nodes]))
    other_roots = callees([n for n in main_nodes if n.name not in saver_nodes]) | object_funcs
    other_roots |= set(functions) - saver_reach  # unreferenced functions are checked as if reachable
    strict = reach(other_roots)
    saver_only = saver_reach - strict
    report.details.setdefault("functions", 0)
    report.details["functions"] += len(functions)
    report.details.setdefault("saver_functions", [])
    report.details["saver_functions"] += sorted(saver_only)
    for where, nodes, allowed in [("the main graph", main_nodes, set())] + [
            ("function %s" % name, functions[name], _TF_SAVER_OK if name in saver_only else set())
            for name in sorted(functions)]:
        for node in nodes:
            if node.op in allowed:
                continue
            problem = _op_problem(node.op, node)
            if problem:
                report.add("%s (in %s)" % (problem, where))


def check_savedmodel(path) -> FormatReport:
    path = str(path)
    report = FormatReport("savedmodel", os.path.basename(path.rstrip("/")) or path)
    pb = os.path.join(path, "saved_model.pb")
    if not os.path.isfile(pb):
        if os.path.isfile(os.path.join(path, "saved_model.pbtxt")):
            report.add("saved_model.pbtxt (text format) is not checked; save the model as saved_model.pb")
        else:
            report.add("no saved_model.pb")
        return report
    with open(pb, "rb") as handle:
        data = handle.read()
    try:
        metas = _sub(data, 2)
        for meta in metas:
            _check_meta_graph(meta, report)
    except _ProtoError as exc:
        report.add("saved_model.pb cannot be parsed (%s)" % exc)
        return report
    if not metas:
        report.add("saved_model.pb holds no MetaGraphDef")
    report.details["meta_graphs"] = len(metas)
    return report


# --------------------------------------------------------------------------- TorchScript

_TORCH_NAMESPACES = {"aten", "prim", "quantized", "_quantized", "mkldnn", "mkldnn_prepacked", "onednn", "mkl",
                     "sparse", "profiler"}
# ``ops.<namespace>.<op>`` as TorchScript serialises operator calls (not ``self.ops.x``, a submodule)
_TORCH_OPS = re.compile(rb"(?:^|[^\w.]|\btorch\.)ops\.([A-Za-z_][A-Za-z0-9_]*)\.", re.M)
_TORCH_FILE = re.compile(rb"\bfrom_file\b")


def check_torchscript(source) -> FormatReport:
    """A TorchScript zip archive, as a path or as the bytes torch.jit.load will read."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, opened = "model", io.BytesIO(bytes(source))
    else:
        name, opened = os.path.basename(str(source)), str(source)
    report = FormatReport("torchscript", name)
    try:
        with zipfile.ZipFile(opened) as archive:
            entries = archive.namelist()
            code = [e for e in entries if "/code/" in "/" + e and (e.endswith(".py") or e.endswith(".pkl"))]
            code += [e for e in entries if e.endswith("bytecode.pkl") and e not in code]
            if not any(e.endswith(".py") for e in code):
                report.add("the archive has no TorchScript code/ (not a torch.jit.save file)")
            for entry in code:
                data = archive.read(entry)
                if _TORCH_FILE.search(data):
                    report.add("%s calls from_file (reads a file into a tensor)" % entry.split("/", 1)[-1])
                for match in _TORCH_OPS.finditer(data):
                    ns = match.group(1).decode("ascii")
                    if ns not in _TORCH_NAMESPACES:
                        report.add("%s calls torch.ops.%s operators" % (entry.split("/", 1)[-1], ns))
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        report.add("the archive cannot be read (%s)" % exc)
    return report


# --------------------------------------------------------------------------- ONNX


def _onnx_tensor(data, where, report):
    external = False
    location = None
    for f, w, v in _fields(data):
        if f == 14 and w == 0 and v == 1:  # data_location = EXTERNAL
            external = True
        elif f == 13 and w == 2:  # external_data entry
            external = True
            key = value = None
            for ef, ew, ev in _fields(v):
                if ef == 1 and ew == 2:
                    key = _text(ev)
                elif ef == 2 and ew == 2:
                    value = _text(ev)
            if key == "location":
                location = value
    if external:
        report.add("%s keeps its data in an external file%s" % (where, " (%r)" % location if location else ""))


def _onnx_attribute(data, where, report, depth):
    for f, w, v in _fields(data):
        if w != 2:
            continue
        if f in (5, 10):  # t, tensors
            _onnx_tensor(v, where, report)
        elif f in (6, 11):  # g, graphs
            _onnx_graph(v, where, report, depth + 1)
        elif f in (22, 23):  # sparse_tensor(s)
            _onnx_sparse(v, where, report)


def _onnx_sparse(data, where, report):
    for f, w, v in _fields(data):
        if f in (1, 2) and w == 2:
            _onnx_tensor(v, where, report)


def _onnx_graph(data, where, report, depth=0):
    if depth > 64:
        report.add("subgraphs nested too deeply to check")
        return
    for f, w, v in _fields(data):
        if w != 2:
            continue
        if f == 5:  # initializer
            name = next((_text(tv) for tf, tw, tv in _fields(v) if tf == 8 and tw == 2), "?")
            _onnx_tensor(v, "initializer %r" % name, report)
        elif f == 15:
            _onnx_sparse(v, where + " (sparse initializer)", report)
        elif f == 1:  # node
            for nf, nw, nv in _fields(v):
                if nf == 5 and nw == 2:
                    _onnx_attribute(nv, where + " (node attribute)", report, depth)


# ModelProto's top-level fields and their wire types (what a file must hold to be taken for ONNX).
_ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


def looks_like_onnx(data) -> bool:
    """True when the bytes' top-level protobuf fields are ModelProto's, with a version and a graph.

    How the packager tells an ONNX file from other content; nothing is parsed beyond the top level."""
    pos = 0
    seen = set()
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            field, wire = key >> 3, key & 7
            if _ONNX_FIELDS.get(field) != wire:
                return False
            if wire == 0:
                _value, pos = _varint(data, pos)
            else:
                length, pos = _varint(data, pos)
                pos += length
                if pos > len(data):
                    return False
            seen.add(field)
    except _ProtoError:
        return False
    return 7 in seen and 1 in seen


def check_onnx(source) -> FormatReport:
    """An ONNX ModelProto, as a path or as the bytes the runtime hands to ONNX Runtime."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, data = "model", bytes(source)
    else:
        name = os.path.basename(str(source))
        with open(str(source), "rb") as handle:
            data = handle.read()
    report = FormatReport("onnx", name)
    try:
        for f, w, v in _fields(data):
            if w != 2:
                continue
            if f == 7:  # graph
                _onnx_graph(v, "the graph", report)
            elif f == 20:  # training_info: initialization / algorithm graphs
                for tf, tw, tv in _fields(v):
                    if tf in (1, 2) and tw == 2:
                        _onnx_graph(tv, "training info", report)
            elif f == 25:  # functions
                for ff, fw, fv in _fields(v):
                    if ff == 7 and fw == 2:
                        for nf, nw, nv in _fields(fv):
                            if nf == 5 and nw == 2:
                                _onnx_attribute(nv, "a model function", report, 0)
    except _ProtoError as exc:
        report.corrupt = "not a valid ONNX protobuf (%s)" % exc
        report.add("the model cannot be parsed (%s)" % exc)
    return report
