"""What would unpickling this file import and call? Answered without unpickling it.

A pickle is a program for a small stack machine: its GLOBAL/STACK_GLOBAL/INST
opcodes import any ``module.name`` and its REDUCE/NEWOBJ/BUILD opcodes call
what they imported. A scikit-learn model file therefore runs whatever callable
it names, wherever it is loaded. This module decides, before anything is
loaded, whether every global a pickle or joblib file references is in an
allowlist of what scikit-learn models are made of.

It is a *faithful* walk, not a heuristic: :class:`_Machine` emulates the
pure-Python unpickler that ``joblib.load`` uses (``pickle._Unpickler`` with
joblib's ``NumpyUnpickler.load_build``) symbolically: the same stack, mark
stack, memo, framing and protocol-dependent name mapping, but never importing
or calling anything. That is what it takes to follow joblib's format, where
each numpy array is a pickled ``NumpyArrayWrapper`` whose BUILD is followed by
the raw array bytes (after an optional alignment pad), and where an array of
Python objects is a *nested* pickle read from the same stream: to know how
many bytes to skip (or that a nested pickle starts), the walk must know each
wrapper's shape and dtype exactly as numpy will. Anything it cannot verify is
refused, never passed: unknown opcodes, persistent ids, extension codes,
computed STACK_GLOBAL names, dtypes whose pickled flags disagree with their
type (numpy trusts those flags: an "object" dtype without its object flag reads
pointers from the file), wrappers used in unusual ways, truncation, and bytes
after the end of the pickle.

Compressed joblib files (zlib, gzip, bz2, lzma, xz) are decompressed here as a
stream; the runtime loads from the same decompressing stream
(:func:`open_stream`), so the bytes checked are the bytes loaded.

Standard library only: the packager on the Ansible controller loads this very
file from the runtime directory (no second copy), and the runtime imports it as
``modelops_runtime.picklescan``.
"""

from __future__ import annotations

import _compat_pickle
import bz2
import codecs
import io
import lzma
import os
import re
import struct
import sys
import zlib

__all__ = [
    "Allowlist", "PickleRefused", "ScanReport", "UnsupportedFormat", "default_allowlist", "display_name",
    "open_stream", "parse_global", "scan", "scan_bytes", "scan_path", "sniff",
]

HIGHEST_PROTOCOL = 5
ALLOWLIST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "allowlist")

# Globals whose instances the scanner must follow exactly (their BUILD reads raw bytes from the
# stream, or sets flags numpy trusts). They may only be used the way joblib and numpy write them.
NAW = ("joblib.numpy_pickle", "NumpyArrayWrapper")
DTYPE = ("numpy", "dtype")
PARTIAL = ("functools", "partial")
RECONSTRUCTOR = ("copyreg", "_reconstructor")
OBJECT = ("builtins", "object")

# Hints for names that are refused for a reason other than "not a model part".
_HINTS = {
    ("joblib.numpy_pickle_compat", "NDArrayWrapper"): "a joblib < 0.10 file that keeps arrays in side files; re-save it with a current joblib",
    ("joblib.numpy_pickle_compat", "ZNDArrayWrapper"): "a joblib < 0.10 file that keeps arrays in side files; re-save it with a current joblib",
    ("numpy.core", "_ufunc_reconstruct"): "imports any module and returns any attribute of it",
    ("numpy._core", "_ufunc_reconstruct"): "imports any module and returns any attribute of it",
}

# Listed callables that can return one of their arguments as is.
_RETURNS_ARGUMENT = {("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar")}

_CHUNK = 1 << 16
_MAX_TRAVERSAL = 200_000


class UnsupportedFormat(ValueError):
    """The bytes are not something the scanner (and therefore the runtime) reads."""


class PickleRefused(Exception):
    """Raised by :func:`check`: the file must not be unpickled. ``report`` says why."""

    def __init__(self, report: "ScanReport"):
        super().__init__(report.message())
        self.report = report


class _Refuse(Exception):
    """Internal: the walk cannot continue or the construct cannot be verified."""


# --------------------------------------------------------------------------- names

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE_RE = re.compile(r"^%s(\.%s)*$" % (_IDENT, _IDENT))
_NAME_RE = re.compile(r"^%s(\.%s)*$" % (_IDENT, _IDENT))


def display_name(module: str, name: str) -> str:
    """``module.name``, or ``module:qual.name`` when the name itself is dotted (unambiguous)."""
    return "%s:%s" % (module, name) if "." in name else "%s.%s" % (module, name)


def parse_global(text: str) -> tuple[str, str]:
    """``module.name`` (split at the last dot) or ``module:qualified.name`` -> (module, name)."""
    if not isinstance(text, str):
        raise ValueError("a global must be a string like 'module.name', got %r" % (text,))
    text = text.strip()
    if ":" in text:
        module, _, name = text.partition(":")
    else:
        module, _, name = text.rpartition(".")
    if not module or not _MODULE_RE.match(module) or not name or not _NAME_RE.match(name):
        raise ValueError("%r is not a global of the form 'module.name' (or 'module:Qualified.name')" % text)
    return module, name


class Allowlist:
    """A set of exact (module, name) pairs. No wildcards, no prefixes."""

    def __init__(self, pairs=(), sources=()):
        self.pairs = frozenset(pairs)
        self.sources = tuple(sources)

    def __contains__(self, pair) -> bool:
        return pair in self.pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def extended(self, extra, source: str = "trusted_globals") -> "Allowlist":
        pairs = set(self.pairs)
        for item in extra or ():
            pairs.add(parse_global(item) if isinstance(item, str) else tuple(item))
        return Allowlist(pairs, self.sources + ((source,) if extra else ()))

    @classmethod
    def from_lines(cls, lines, source: str) -> "Allowlist":
        pairs = set()
        for number, line in enumerate(lines, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                pairs.add(parse_global(line))
            except ValueError as exc:
                raise ValueError("%s line %d: %s" % (source, number, exc)) from None
        return cls(pairs, (source,))


_DEFAULT = {}


def allowlist_files(directory: str = ALLOWLIST_DIR) -> list[str]:
    return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".txt"))


def default_allowlist(directory: str = ALLOWLIST_DIR) -> Allowlist:
    """The allowlist shipped with this runtime (every ``allowlist/*.txt``)."""
    cached = _DEFAULT.get(directory)
    if cached is None:
        pairs, sources = set(), []
        for path in allowlist_files(directory):
            with open(path, encoding="utf-8") as handle:
                part = Allowlist.from_lines(handle, os.path.basename(path))
            pairs |= part.pairs
            sources.extend(part.sources)
        cached = _DEFAULT[directory] = Allowlist(pairs, sources)
    return cached


def allowlist_digest(directory: str = ALLOWLIST_DIR) -> str:
    """sha256 over the allowlist files' contents (recorded in the manifest)."""
    import hashlib

    digest = hashlib.sha256()
    for path in allowlist_files(directory):
        digest.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()


# --------------------------------------------------------------------------- streams

# Magic numbers, checked in the order joblib checks them (joblib.numpy_pickle_utils._detect_compressor).
_PREFIXES = (
    (b"ZF", "joblib-compat"),
    (b"\x78", "zlib"),
    (b"\x1f\x8b", "gzip"),
    (b"BZ", "bz2"),
    (b"\x5d\x00", "lzma"),
    (b"\xfd\x37\x7a\x58\x5a", "xz"),
    (b"\x04\x22\x4d\x18", "lz4"),
)


def sniff(head: bytes) -> str:
    """The container of a pickle/joblib file from its first bytes: a compressor name or 'none'."""
    for prefix, kind in _PREFIXES:
        if head.startswith(prefix):
            return kind
    return "none"


class _Decompressing(io.RawIOBase):
    """A decompressing, read-only stream that refuses data after the end of the compressed stream."""

    def __init__(self, fileobj, kind: str):
        super().__init__()
        self._fp = fileobj
        self._kind = kind
        if kind == "zlib":
            self._d = zlib.decompressobj(zlib.MAX_WBITS)
        elif kind == "gzip":
            self._d = zlib.decompressobj(31)
        elif kind == "bz2":
            self._d = bz2.BZ2Decompressor()
        elif kind == "lzma":
            self._d = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)
        elif kind == "xz":
            self._d = lzma.LZMADecompressor(format=lzma.FORMAT_AUTO)
        else:
            raise UnsupportedFormat("unknown compression %s" % kind)
        self._buf = b""
        self._off = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def _trailing(self, unused: bytes) -> None:
        if unused or self._fp.read(1):
            raise UnsupportedFormat("data after the end of the %s stream" % self._kind)

    def _more(self) -> bytes:
        d = self._d
        while True:
            if d.eof:
                self._trailing(d.unused_data)
                return b""
            if self._kind in ("zlib", "gzip"):
                data = d.unconsumed_tail or self._fp.read(_CHUNK)
                if not data:
                    raise UnsupportedFormat("the %s stream is truncated" % self._kind)
            elif d.needs_input:
                data = self._fp.read(_CHUNK)
                if not data:
                    raise UnsupportedFormat("the %s stream is truncated" % self._kind)
            else:
                data = b""
            try:
                out = d.decompress(data, _CHUNK * 16)
            except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
                raise UnsupportedFormat("corrupt %s stream: %s" % (self._kind, exc)) from None
            if out:
                return out

    def readinto(self, b) -> int:
        if self._off >= len(self._buf):
            if self._done:
                return 0
            self._buf = self._more()
            self._off = 0
            if not self._buf:
                self._done = True
                return 0
        n = min(len(b), len(self._buf) - self._off)
        b[:n] = self._buf[self._off:self._off + n]
        self._off += n
        return n


def open_stream(fileobj):
    """(container, stream of the uncompressed pickle bytes) for a pickle or joblib file object.

    The runtime unpickles from this same kind of stream, so what was scanned is what is loaded.
    Raises UnsupportedFormat for containers neither the scanner nor the runtime reads.
    """
    if not hasattr(fileobj, "peek"):
        fileobj = io.BufferedReader(fileobj, buffer_size=_CHUNK)
    head = fileobj.peek(8)[:8]
    kind = sniff(head)
    if kind == "joblib-compat":
        raise UnsupportedFormat("a joblib < 0.9.3 file (ZF container, arrays in side files); re-save it with a current joblib")
    if kind == "lz4":
        raise UnsupportedFormat("an lz4-compressed joblib file; the runtime does not ship lz4: re-save it with compress=3 (zlib)")
    if kind == "none":
        return kind, fileobj
    return kind, io.BufferedReader(_Decompressing(fileobj, kind), buffer_size=_CHUNK)


class _Source:
    """The uncompressed byte stream, shared by the outer pickle and joblib's nested ones."""

    def __init__(self, stream):
        self._s = stream
        self.pos = 0

    def read(self, n: int) -> bytes:
        data = self._s.read(n)
        self.pos += len(data)
        if len(data) < n:
            raise _Refuse("the file ends in the middle of the pickle (truncated)")
        return data

    def readline(self) -> bytes:
        data = self._s.readline()
        self.pos += len(data)
        if not data.endswith(b"\n"):
            raise _Refuse("the file ends in the middle of the pickle (truncated)")
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            step = min(n, 1 << 20)
            self.read(step)
            n -= step

    def at_end(self) -> bool:
        return not self._s.read(1)


class _Framer:
    """pickle._Unframer: reads come from the current frame, then from the file."""

    def __init__(self, src: _Source):
        self.src = src
        self.frame = None

    def read(self, n: int) -> bytes:
        if self.frame is not None:
            data = self.frame.read(n)
            if not data and n != 0:
                self.frame = None
                return self.src.read(n)
            if len(data) < n:
                raise _Refuse("pickle exhausted before end of frame")
            return data
        return self.src.read(n)

    def readline(self) -> bytes:
        if self.frame is not None:
            data = self.frame.readline()
            if not data:
                self.frame = None
                return self.src.readline()
            if data[-1:] != b"\n":
                raise _Refuse("pickle exhausted before end of frame")
            return data
        return self.src.readline()

    def load_frame(self, size: int) -> None:
        if self.frame is not None and self.frame.read() != b"":
            raise _Refuse("beginning of a new frame before end of current frame")
        self.frame = io.BytesIO(self.src.read(size))

    def remaining(self) -> int:
        if self.frame is None:
            return 0
        return len(self.frame.getbuffer()) - self.frame.tell()

    def position(self) -> int:
        return self.src.pos - self.remaining()


# --------------------------------------------------------------------------- symbolic values

class _Ref:
    """A global, as find_class would return it."""

    __slots__ = ("module", "name")

    def __init__(self, module, name):
        self.module = module
        self.name = name

    @property
    def pair(self):
        return (self.module, self.name)


class _Obj:
    """The result of a call or an instantiation (never made: only described)."""

    __slots__ = ("kind", "func", "args", "attrs", "spec", "state", "frozen")

    def __init__(self, kind, func, args):
        self.kind = kind  # "naw", "dtype", "dtype-odd", "partial" or "other"
        self.func = func
        self.args = args
        self.attrs = None  # NumpyArrayWrapper instance dict
        self.spec = None  # numpy.dtype constructor arguments
        self.state = None  # numpy.dtype state (after BUILD)
        self.frozen = False  # dtype already used: its state may no longer change


def _special_class(ref: _Ref) -> bool:
    return ref.pair in (NAW, DTYPE) or ref.module == "numpy.dtypes" or ref.module.startswith("numpy.dtypes.")


class _List:
    __slots__ = ("items",)

    def __init__(self, items=None):
        self.items = items if items is not None else []


class _Dict:
    __slots__ = ("pairs",)

    def __init__(self, pairs=None):
        self.pairs = pairs if pairs is not None else []


class _Set:
    __slots__ = ("items", "frozen")

    def __init__(self, items=None, frozen=False):
        self.items = items if items is not None else []
        self.frozen = frozen


class _Buffer:
    """A bytearray or a read-only view of one."""

    __slots__ = ()


class _Array:
    """What a NumpyArrayWrapper became after its bytes were read."""

    __slots__ = ()


_PRIMITIVES = (int, float, str, bytes, bool, type(None))


def _kind_of(value) -> str:
    if isinstance(value, _Ref):
        return "global %s" % display_name(value.module, value.name)
    return {_List: "list", _Dict: "dict", _Set: "set", tuple: "tuple", _Buffer: "bytearray", _Array: "array",
            _Obj: "object"}.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- numpy dtypes

_DTYPE_SPEC = re.compile(r"^([biufcOSUVMm])(\d+)$")
_FIXED_SIZES = {"b": {1}, "i": {1, 2, 4, 8}, "u": {1, 2, 4, 8}, "f": {2, 4, 8, 16}, "c": {8, 16, 32},
                "O": {8, 4}, "M": {8}, "m": {8}}
# numpy descriptor flags
_F_REFCOUNT, _F_LIST_PICKLE, _F_IS_POINTER, _F_NEEDS_INIT = 0x01, 0x02, 0x04, 0x08
_OBJECT_FLAGS = _F_REFCOUNT | _F_LIST_PICKLE | _F_IS_POINTER | _F_NEEDS_INIT


class _DtypeInfo:
    __slots__ = ("kind", "itemsize", "hasobject")

    def __init__(self, kind, itemsize, hasobject):
        self.kind = kind
        self.itemsize = itemsize
        self.hasobject = hasobject


def _dtype_spec(obj: _Obj):
    """(kind, digits) of numpy.dtype('<kind><digits>', align, copy) as numpy's __reduce__ writes it."""
    args = obj.spec
    if not (isinstance(args, tuple) and len(args) == 3 and isinstance(args[0], str)
            and type(args[1]) is bool and args[2] is True):
        raise _Refuse("numpy.dtype built from %s, not as numpy pickles dtypes" % _describe_args(args))
    match = _DTYPE_SPEC.match(args[0])
    if not match:
        raise _Refuse("numpy.dtype(%r) is not a dtype spec numpy writes in pickles" % args[0])
    kind, digits = match.group(1), int(match.group(2))
    if kind in _FIXED_SIZES and digits not in _FIXED_SIZES[kind]:
        raise _Refuse("numpy.dtype(%r) has an impossible size" % args[0])
    return kind, digits


def _describe_args(args) -> str:
    if isinstance(args, tuple):
        return "(%s)" % ", ".join(repr(a) if isinstance(a, _PRIMITIVES) else _kind_of(a) for a in args)
    return _kind_of(args)


def _dtype_info(obj: _Obj) -> _DtypeInfo:
    """itemsize and hasobject exactly as numpy will see them, or _Refuse."""
    kind, digits = _dtype_spec(obj)
    state = obj.state
    if state is None:
        size = digits * 4 if kind == "U" else digits
        return _DtypeInfo(kind, size, kind == "O")
    version, _endian, subarray, names, fields, elsize, _alignment, flags = state[:8]
    itemsize = elsize if kind in "SUV" else digits
    hasobject = kind == "O"
    if fields is not None:
        for _key, value in fields.pairs:
            if not (isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[0], _Obj)
                    and value[0].kind == "dtype" and type(value[1]) is int):
                raise _Refuse("numpy.dtype field %s is not (dtype, offset)" % _kind_of(value))
            sub = _dtype_info(value[0])
            value[0].frozen = True
            if value[1] < 0 or value[1] + sub.itemsize > itemsize:
                raise _Refuse("numpy.dtype field at offset %d (%d bytes) lies outside the %d-byte item"
                              % (value[1], sub.itemsize, itemsize))
            hasobject = hasobject or sub.hasobject
        for name in names:
            if not any(k == name for k, _v in fields.pairs):
                raise _Refuse("numpy.dtype names %r but has no such field" % (name,))
    if subarray is not None:
        base, shape = subarray
        sub = _dtype_info(base)
        base.frozen = True
        count = 1
        for dim in shape:
            count *= dim
        if sub.itemsize * count != itemsize:
            raise _Refuse("numpy.dtype subarray of %d x %d bytes in a %d-byte item" % (count, sub.itemsize, itemsize))
        hasobject = hasobject or sub.hasobject
    if hasobject and kind != "O":
        raise _Refuse("numpy.dtype with object fields inside a structured or subarray dtype is not accepted")
    if version >= 3:
        if hasobject and flags & _OBJECT_FLAGS != _OBJECT_FLAGS:
            raise _Refuse("numpy.dtype('O') pickled without its object flags (%d): numpy would read pointers "
                          "from the file" % flags)
        if not hasobject and flags & (_F_REFCOUNT | _F_LIST_PICKLE | _F_IS_POINTER):
            raise _Refuse("numpy.dtype(%r) pickled with object flags (%d)" % (obj.spec[0], flags))
    return _DtypeInfo(kind, itemsize, hasobject)


def _check_dtype_state(obj: _Obj, state) -> None:
    if obj.frozen or obj.state is not None:
        raise _Refuse("a numpy.dtype's state is set after the dtype was used (or set twice)")
    if not (isinstance(state, tuple) and len(state) in (8, 9)):
        raise _Refuse("numpy.dtype state %s is not the tuple numpy writes" % _kind_of(state))
    version, endian, subarray, names, fields, elsize, alignment, flags = state[:8]
    if type(version) is not int or version not in (3, 4):
        raise _Refuse("numpy.dtype state version %r is not one numpy >= 1.7 writes" % (version,))
    if not (isinstance(endian, str) and endian in ("<", ">", "|", "=")):
        raise _Refuse("numpy.dtype byte order %r" % (endian,))
    for label, value in (("elsize", elsize), ("alignment", alignment), ("flags", flags)):
        if type(value) is not int or not -(1 << 31) <= value < (1 << 31):
            raise _Refuse("numpy.dtype %s %r is not an int" % (label, value))
    if (names is None) != (fields is None):
        raise _Refuse("numpy.dtype with names but no fields (or the reverse)")
    if names is not None:
        if not (isinstance(names, tuple) and all(isinstance(n, str) for n in names) and isinstance(fields, _Dict)):
            raise _Refuse("numpy.dtype names/fields of the wrong types")
    if subarray is not None:
        if not (isinstance(subarray, tuple) and len(subarray) == 2 and isinstance(subarray[0], _Obj)
                and subarray[0].kind == "dtype" and isinstance(subarray[1], tuple)
                and all(type(d) is int and d >= 0 for d in subarray[1])):
            raise _Refuse("numpy.dtype subarray is not (dtype, shape)")
    obj.state = state
    _dtype_info(obj)  # validates fields, sizes and flags now


# --------------------------------------------------------------------------- the machine

class _Machine:
    """Emulates pickle._Unpickler (+ joblib's BUILD hook) on symbolic values."""

    def __init__(self, src: _Source, report: "ScanReport", joblib_build: bool = True, outer: "_Machine" = None,
                 depth: int = 0):
        self.src = src
        self.framer = _Framer(src)
        self.report = report
        self.joblib_build = joblib_build
        self.outer = outer
        self.depth = depth
        self.stack = []
        self.metastack = []
        self.memo = {}
        self.proto = 0
        self.read = self.framer.read
        self.readline = self.framer.readline

    # -- helpers
    def _fail(self, why: str):
        raise _Refuse(why)

    def pop(self):
        if not self.stack:
            self._fail("the pickle pops from an empty stack")
        return self.stack.pop()

    def top(self):
        if not self.stack:
            self._fail("the pickle reads an empty stack")
        return self.stack[-1]

    def pop_mark(self):
        if not self.metastack:
            self._fail("the pickle pops a mark that was never pushed")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    @staticmethod
    def _freeze(items):
        for item in items:
            if type(item) is _Obj and item.kind == "dtype":
                item.frozen = True

    # -- find_class
    def find_class(self, module: str, name: str) -> _Ref:
        owner = self.outer if self.outer is not None else self  # joblib binds find_class to the outer unpickler
        if owner.proto < 3:
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        self.report._reference(module, name)
        return _Ref(module, name)

    # -- calls
    def call(self, func, args, how: str):
        """What func(*args) (how='call') or func.__new__(func, *args) (how='new') gives."""
        self._freeze((func,))
        if isinstance(args, tuple):
            self._freeze(args)
        if isinstance(func, _Ref):
            pair = func.pair
            if pair == NAW:
                obj = _Obj("naw", func, args)
                obj.attrs = {}
                if how == "call":
                    if not isinstance(args, tuple) or not 4 <= len(args) <= 6:
                        self._fail("NumpyArrayWrapper called with %s" % _describe_args(args))
                    keys = ("subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes")
                    obj.attrs = {"allow_mmap": False, "numpy_array_alignment_bytes": 16}
                    obj.attrs.update(zip(keys, args))
                return obj
            if pair == DTYPE:
                obj = _Obj("dtype", func, args)
                obj.spec = args
                return obj
            if _special_class(func):
                return _Obj("dtype-odd", func, args)
            if pair == PARTIAL:
                if not (isinstance(args, tuple) and args and self._plain_global(args[0])):
                    self._fail("functools.partial of %s: only partials of a listed global are accepted"
                               % (_kind_of(args[0]) if isinstance(args, tuple) and args else _describe_args(args)))
                return _Obj("partial", func, args)
            if pair == RECONSTRUCTOR and isinstance(args, tuple) and len(args) == 3 and isinstance(args[0], _Ref):
                if args[0].pair == NAW and isinstance(args[1], _Ref) and args[1].pair == OBJECT and args[2] is None:
                    obj = _Obj("naw", func, args)
                    obj.attrs = {}
                    return obj
            return _Obj("other", func, args)
        if isinstance(func, _Obj) and func.kind in ("naw", "dtype", "dtype-odd"):
            self._fail("the pickle calls a %s instance" % func.kind)
        if not isinstance(func, (_Obj, _Array)):
            self._fail("the pickle calls a %s" % _kind_of(func))
        return _Obj("other", func, args)

    @staticmethod
    def _plain_global(value) -> bool:
        return isinstance(value, _Ref) and value.pair != PARTIAL and not _special_class(value)

    def _could_be_special(self, obj: _Obj) -> bool:
        """Could BUILD on this object set the state of a NumpyArrayWrapper or a numpy dtype?

        Two ways: its maker returned one of its arguments (numpy's ``scalar`` does for object
        dtypes; a callable instance might), or its maker was handed the wrapper/dtype *class* and
        instantiated it (``copyreg._reconstructor`` does, so may others).
        """
        return self._identity_special(obj, 0) or self._class_reachable(obj)

    def _identity_special(self, value, depth: int) -> bool:
        if not isinstance(value, _Obj):
            return False
        if value.kind != "other":
            return True
        if depth > 64:
            self._fail("an object's construction is too deep to verify")
        func = value.func
        if isinstance(func, _Ref):
            if func.pair in _RETURNS_ARGUMENT and isinstance(value.args, tuple):
                return any(self._identity_special(a, depth + 1) for a in value.args)
            return False
        return self._reachable(value, instances=True)  # a callable instance: it may return what it was given

    def _class_reachable(self, obj: _Obj) -> bool:
        return self._reachable(obj, instances=False)

    def _reachable(self, obj: _Obj, instances: bool) -> bool:
        seen = set()
        todo = [obj.func, obj.args]
        budget = _MAX_TRAVERSAL
        while todo:
            value = todo.pop()
            if isinstance(value, _PRIMITIVES) or isinstance(value, (_Buffer, _Array)) or id(value) in seen:
                continue
            seen.add(id(value))
            budget -= 1
            if budget < 0:
                self._fail("an object's construction is too large to verify")
            if isinstance(value, _Ref):
                if _special_class(value):
                    return True
            elif isinstance(value, tuple):
                todo.extend(value)
            elif isinstance(value, (_List, _Set)):
                todo.extend(value.items)
            elif isinstance(value, _Dict):
                for k, v in value.pairs:
                    todo.append(k)
                    todo.append(v)
            elif isinstance(value, _Obj):
                if value.kind != "other":
                    if instances:
                        return True
                    continue  # a made dtype/wrapper instance does not hand out its class
                todo.append(value.func)
                todo.append(value.args)
        return False

    # -- BUILD
    def build(self):
        state = self.pop()
        inst = self.top()
        self._freeze((state,))
        if not isinstance(inst, _Obj):
            self._fail("BUILD on a %s" % _kind_of(inst))
        slotstate = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slotstate = state
        for part in (state, slotstate):
            if isinstance(part, _Dict):
                for key, _value in part.pairs:
                    if isinstance(key, str) and key.startswith("__") and key.endswith("__"):
                        self._fail("BUILD sets the attribute %s" % key)
        kind = inst.kind
        if kind == "naw":
            self._build_naw(inst, state, slotstate)
        elif kind == "dtype":
            _check_dtype_state(inst, state if slotstate is None else (state, slotstate))
        elif kind == "dtype-odd":
            self._fail("BUILD on a %s instance (not how numpy pickles dtypes)" % display_name(*inst.func.pair))
        elif kind == "partial":
            if not (isinstance(state, tuple) and len(state) == 4 and self._plain_global(state[0])) or slotstate is not None:
                self._fail("functools.partial state names %s: only partials of a listed global are accepted"
                           % (_kind_of(state[0]) if isinstance(state, tuple) and state else _kind_of(state)))
        elif self.report._special_seen and self._could_be_special(inst):
            self._fail("BUILD on an object made from NumpyArrayWrapper or numpy.dtype in a way joblib and numpy "
                       "never write")

    def _build_naw(self, inst: _Obj, state, slotstate):
        for part in (state, slotstate):
            if part is None:
                continue
            if not isinstance(part, _Dict):
                self._fail("NumpyArrayWrapper state is a %s" % _kind_of(part))
            for key, value in part.pairs:
                if not isinstance(key, str):
                    self._fail("NumpyArrayWrapper state key %s" % _kind_of(key))
                inst.attrs[key] = value
        if self.joblib_build:
            self.stack[-1] = self._read_array(inst)

    def _read_array(self, inst: _Obj):
        """NumpyArrayWrapper.read_array: skip the raw bytes, or walk the nested object pickle."""
        attrs = inst.attrs
        shape, dtype = attrs.get("shape"), attrs.get("dtype")
        if not isinstance(shape, tuple) or not all(type(d) is int for d in shape):
            self._fail("NumpyArrayWrapper shape is %s, not a tuple of ints" % _kind_of(shape))
        count = 1
        for dim in shape:
            if dim < 0:
                self._fail("NumpyArrayWrapper shape %r is negative" % (shape,))
            count *= dim
        if count >= 1 << 63:
            self._fail("NumpyArrayWrapper shape %r overflows" % (shape,))
        if not (isinstance(dtype, _Obj) and dtype.kind == "dtype"):
            self._fail("NumpyArrayWrapper dtype is %s, not a numpy.dtype" % _kind_of(dtype))
        info = _dtype_info(dtype)
        dtype.frozen = True
        if info.hasobject:
            if self.depth >= 8:
                self._fail("object arrays nested too deeply")
            self.report.nested += 1
            nested = _Machine(self.src, self.report, joblib_build=False, outer=self.outer or self, depth=self.depth + 1)
            return nested.run()
        if info.itemsize <= 0:
            self._fail("NumpyArrayWrapper dtype has no size")
        if attrs.get("numpy_array_alignment_bytes", None) is not None:
            pad = self.src.read(1)[0]
            if pad:
                self.src.skip(pad)
        self.src.skip(count * info.itemsize)
        self.report.arrays += 1
        return _Array()

    # -- the loop
    def run(self):
        dispatch = _DISPATCH
        read = self.read
        report = self.report
        while True:
            key = read(1)
            handler = dispatch.get(key[0])
            if handler is None:
                self._fail("unknown pickle opcode 0x%02x" % key[0])
            report.opcodes += 1
            if handler(self) is _STOP:
                return self._stopped

    # -- opcodes
    def op_proto(self):
        proto = self.read(1)[0]
        if not 0 <= proto <= HIGHEST_PROTOCOL:
            self._fail("unsupported pickle protocol %d" % proto)
        self.proto = proto
        self.report.protocol = max(self.report.protocol, proto)

    def op_frame(self):
        size, = struct.unpack("<Q", self.read(8))
        if size > sys.maxsize:
            self._fail("frame size > sys.maxsize")
        self.framer.load_frame(size)

    def op_persid(self):
        self._fail("persistent ids (PERSID), which joblib.load cannot resolve")

    def op_ext(self):
        self._fail("extension registry codes (EXT1/2/4), which name globals indirectly")

    def op_none(self):
        self.stack.append(None)

    def op_newfalse(self):
        self.stack.append(False)

    def op_newtrue(self):
        self.stack.append(True)

    def op_int(self):
        data = self.readline()
        if data == b"00\n":
            value = False
        elif data == b"01\n":
            value = True
        else:
            value = self._int(data[:-1], 0)
        self.stack.append(value)

    def _int(self, text, base):
        try:
            return int(text, base)
        except ValueError:
            self._fail("malformed integer %r" % text[:40])

    def op_binint(self):
        self.stack.append(struct.unpack("<i", self.read(4))[0])

    def op_binint1(self):
        self.stack.append(self.read(1)[0])

    def op_binint2(self):
        self.stack.append(struct.unpack("<H", self.read(2))[0])

    def op_long(self):
        val = self.readline()[:-1]
        if val and val[-1:] == b"L":
            val = val[:-1]
        self.stack.append(self._int(val, 0))

    def op_long1(self):
        n = self.read(1)[0]
        self.stack.append(int.from_bytes(self.read(n), "little", signed=True))

    def op_long4(self):
        n, = struct.unpack("<i", self.read(4))
        if n < 0:
            self._fail("LONG pickle has negative byte count")
        self.stack.append(int.from_bytes(self.read(n), "little", signed=True))

    def op_float(self):
        try:
            self.stack.append(float(self.readline()[:-1]))
        except ValueError:
            self._fail("malformed float")

    def op_binfloat(self):
        self.stack.append(struct.unpack(">d", self.read(8))[0])

    def _string(self, data: bytes) -> str:
        try:
            return data.decode("ascii")  # the Unpickler's default encoding="ASCII", errors="strict"
        except UnicodeDecodeError:
            self._fail("a protocol-0/1 string that is not ASCII")

    def op_string(self):
        data = self.readline()[:-1]
        if len(data) >= 2 and data[0] == data[-1] and data[:1] in (b'"', b"'"):
            data = data[1:-1]
        else:
            self._fail("the STRING opcode argument must be quoted")
        try:
            raw = codecs.escape_decode(data)[0]
        except ValueError:
            self._fail("malformed STRING escape")
        self.stack.append(self._string(raw))

    def op_binstring(self):
        n, = struct.unpack("<i", self.read(4))
        if n < 0:
            self._fail("BINSTRING pickle has negative byte count")
        self.stack.append(self._string(self.read(n)))

    def op_short_binstring(self):
        self.stack.append(self._string(self.read(self.read(1)[0])))

    def op_binbytes(self):
        n, = struct.unpack("<I", self.read(4))
        self.stack.append(self.read(n))

    def op_short_binbytes(self):
        self.stack.append(self.read(self.read(1)[0]))

    def op_binbytes8(self):
        n, = struct.unpack("<Q", self.read(8))
        if n > sys.maxsize:
            self._fail("BINBYTES8 exceeds system's maximum size")
        self.stack.append(self.read(n))

    def op_bytearray8(self):
        n, = struct.unpack("<Q", self.read(8))
        if n > sys.maxsize:
            self._fail("BYTEARRAY8 exceeds system's maximum size")
        self.read(n)
        self.stack.append(_Buffer())

    def op_next_buffer(self):
        self._fail("out-of-band buffers (NEXT_BUFFER), which joblib.load cannot supply")

    def op_readonly_buffer(self):
        if not isinstance(self.top(), (_Buffer, bytes)):
            self._fail("READONLY_BUFFER on a %s" % _kind_of(self.top()))

    def _unicode(self, data: bytes, codec: str) -> str:
        try:
            return str(data, codec, "surrogatepass") if codec == "utf-8" else str(data, codec)
        except UnicodeDecodeError:
            self._fail("malformed unicode string")

    def op_unicode(self):
        self.stack.append(self._unicode(self.readline()[:-1], "raw-unicode-escape"))

    def op_binunicode(self):
        n, = struct.unpack("<I", self.read(4))
        self.stack.append(self._unicode(self.read(n), "utf-8"))

    def op_binunicode8(self):
        n, = struct.unpack("<Q", self.read(8))
        if n > sys.maxsize:
            self._fail("BINUNICODE8 exceeds system's maximum size")
        self.stack.append(self._unicode(self.read(n), "utf-8"))

    def op_short_binunicode(self):
        self.stack.append(self._unicode(self.read(self.read(1)[0]), "utf-8"))

    def op_tuple(self):
        items = self.pop_mark()
        self._freeze(items)
        self.stack.append(tuple(items))

    def op_empty_tuple(self):
        self.stack.append(())

    def _tuple_n(self, n):
        if len(self.stack) < n:
            self._fail("the pickle pops from an empty stack")
        items = tuple(self.stack[-n:])
        del self.stack[-n:]
        self._freeze(items)
        self.stack.append(items)

    def op_tuple1(self):
        self._tuple_n(1)

    def op_tuple2(self):
        self._tuple_n(2)

    def op_tuple3(self):
        self._tuple_n(3)

    def op_empty_list(self):
        self.stack.append(_List())

    def op_empty_dict(self):
        self.stack.append(_Dict())

    def op_empty_set(self):
        self.stack.append(_Set())

    def op_frozenset(self):
        items = self.pop_mark()
        self._freeze(items)
        self._check_hashable(items)
        self.stack.append(_Set(items, frozen=True))

    def op_list(self):
        items = self.pop_mark()
        self._freeze(items)
        self.stack.append(_List(items))

    def _check_hashable(self, keys):
        for key in keys:
            if isinstance(key, (_List, _Dict, _Buffer)) or (isinstance(key, _Set) and not key.frozen):
                self._fail("unhashable %s used as a key" % _kind_of(key))

    def op_dict(self):
        items = self.pop_mark()
        if len(items) % 2:
            self._fail("DICT with an odd number of items")
        self._freeze(items)
        pairs = [(items[i], items[i + 1]) for i in range(0, len(items), 2)]
        self._check_hashable(k for k, _ in pairs)
        self.stack.append(_Dict(pairs))

    def op_inst(self):
        module = self._ascii(self.readline()[:-1])
        name = self._ascii(self.readline()[:-1])
        klass = self.find_class(module, name)
        args = self.pop_mark()
        self._instantiate(klass, tuple(args))

    def _ascii(self, data):
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            self._fail("INST names that are not ASCII")

    def op_obj(self):
        args = self.pop_mark()
        if not args:
            self._fail("OBJ without a class")
        cls = args.pop(0)
        self._instantiate(cls, tuple(args))

    def _instantiate(self, klass, args):
        # pickle._Unpickler._instantiate: klass(*args) unless there are no args and klass is a class.
        self.stack.append(self.call(klass, args, "call" if args else "new"))

    def op_newobj(self):
        args = self.pop()
        cls = self.pop()
        if not isinstance(args, tuple):
            self._fail("NEWOBJ arguments are a %s" % _kind_of(args))
        self.stack.append(self.call(cls, args, "new"))

    def op_newobj_ex(self):
        kwargs = self.pop()
        args = self.pop()
        cls = self.pop()
        if not isinstance(args, tuple) or not isinstance(kwargs, _Dict):
            self._fail("NEWOBJ_EX arguments are %s, %s" % (_kind_of(args), _kind_of(kwargs)))
        self._freeze([v for _k, v in kwargs.pairs])
        obj = self.call(cls, args, "new")
        if kwargs.pairs and obj.kind != "other":
            obj.kind = "dtype-odd" if obj.kind == "dtype" else obj.kind
            if obj.kind in ("naw", "partial"):
                self._fail("%s created with keyword arguments" % display_name(*cls.pair))
        self.stack.append(obj)

    def op_global(self):
        try:
            module = self.readline()[:-1].decode("utf-8")
            name = self.readline()[:-1].decode("utf-8")
        except UnicodeDecodeError:
            self._fail("GLOBAL names that are not UTF-8")
        self.stack.append(self.find_class(module, name))

    def op_stack_global(self):
        name = self.pop()
        module = self.pop()
        if type(name) is not str or type(module) is not str:
            self._fail("STACK_GLOBAL with a computed name (%s, %s): cannot tell what it imports"
                       % (_kind_of(module), _kind_of(name)))
        self.stack.append(self.find_class(module, name))

    def op_reduce(self):
        args = self.pop()
        func = self.top()
        if isinstance(args, _List):
            args = tuple(args.items)
        self.stack[-1] = self.call(func, args, "call")

    def op_pop(self):
        if self.stack:
            self.stack.pop()
        else:
            self.pop_mark()

    def op_pop_mark(self):
        self.pop_mark()

    def op_dup(self):
        self.stack.append(self.top())

    def op_get(self):
        self._get(self._int(self.readline()[:-1], 10))

    def op_binget(self):
        self._get(self.read(1)[0])

    def op_long_binget(self):
        self._get(struct.unpack("<I", self.read(4))[0])

    def _get(self, index):
        if index not in self.memo:
            self._fail("memo value %d not found" % index)
        self.stack.append(self.memo[index])

    def op_put(self):
        index = self._int(self.readline()[:-1], 10)
        if index < 0:
            self._fail("negative PUT argument")
        self.memo[index] = self.top()

    def op_binput(self):
        self.memo[self.read(1)[0]] = self.top()

    def op_long_binput(self):
        index, = struct.unpack("<I", self.read(4))
        if index > sys.maxsize:
            self._fail("negative LONG_BINPUT argument")
        self.memo[index] = self.top()

    def op_memoize(self):
        self.memo[len(self.memo)] = self.top()

    def _container(self, value, what, ok):
        if isinstance(value, ok):
            return
        if isinstance(value, _Obj) and value.kind == "other":
            return  # an instance's own append/extend/add/__setitem__: allowlisted code
        self._fail("%s on a %s" % (what, _kind_of(value)))

    def op_append(self):
        value = self.pop()
        target = self.top()
        self._freeze((value,))
        self._container(target, "APPEND", _List)
        if isinstance(target, _List):
            target.items.append(value)

    def op_appends(self):
        items = self.pop_mark()
        target = self.top()
        self._freeze(items)
        self._container(target, "APPENDS", _List)
        if isinstance(target, _List):
            target.items.extend(items)

    def op_setitem(self):
        value = self.pop()
        key = self.pop()
        target = self.top()
        self._freeze((key, value))
        self._container(target, "SETITEM", _Dict)
        self._check_hashable((key,))
        if isinstance(target, _Dict):
            target.pairs.append((key, value))

    def op_setitems(self):
        items = self.pop_mark()
        target = self.top()
        if len(items) % 2:
            self._fail("SETITEMS with an odd number of items")
        self._freeze(items)
        self._container(target, "SETITEMS", _Dict)
        pairs = [(items[i], items[i + 1]) for i in range(0, len(items), 2)]
        self._check_hashable(k for k, _ in pairs)
        if isinstance(target, _Dict):
            target.pairs.extend(pairs)

    def op_additems(self):
        items = self.pop_mark()
        target = self.top()
        self._freeze(items)
        if isinstance(target, _Set) and target.frozen:
            self._fail("ADDITEMS on a frozenset")
        self._container(target, "ADDITEMS", _Set)
        self._check_hashable(items)
        if isinstance(target, _Set):
            target.items.extend(items)

    def op_build(self):
        self.build()

    def op_mark(self):
        self.metastack.append(self.stack)
        self.stack = []

    def op_stop(self):
        self._stopped = self.pop()
        self._freeze((self._stopped,))
        return _STOP


_STOP = object()
_DISPATCH = {}
for _code, _name in (
        (b"(", "mark"), (b".", "stop"), (b"0", "pop"), (b"1", "pop_mark"), (b"2", "dup"), (b"F", "float"),
        (b"I", "int"), (b"J", "binint"), (b"K", "binint1"), (b"L", "long"), (b"M", "binint2"), (b"N", "none"),
        (b"P", "persid"), (b"Q", "persid"), (b"R", "reduce"), (b"S", "string"), (b"T", "binstring"),
        (b"U", "short_binstring"), (b"V", "unicode"), (b"X", "binunicode"), (b"a", "append"), (b"b", "build"),
        (b"c", "global"), (b"d", "dict"), (b"}", "empty_dict"), (b"e", "appends"), (b"g", "get"), (b"h", "binget"),
        (b"i", "inst"), (b"j", "long_binget"), (b"l", "list"), (b"]", "empty_list"), (b"o", "obj"), (b"p", "put"),
        (b"q", "binput"), (b"r", "long_binput"), (b"s", "setitem"), (b"t", "tuple"), (b")", "empty_tuple"),
        (b"u", "setitems"), (b"G", "binfloat"), (b"\x80", "proto"), (b"\x81", "newobj"), (b"\x82", "ext"),
        (b"\x83", "ext"), (b"\x84", "ext"), (b"\x85", "tuple1"), (b"\x86", "tuple2"), (b"\x87", "tuple3"),
        (b"\x88", "newtrue"), (b"\x89", "newfalse"), (b"\x8a", "long1"), (b"\x8b", "long4"), (b"B", "binbytes"),
        (b"C", "short_binbytes"), (b"\x8c", "short_binunicode"), (b"\x8d", "binunicode8"), (b"\x8e", "binbytes8"),
        (b"\x8f", "empty_set"), (b"\x90", "additems"), (b"\x91", "frozenset"), (b"\x92", "newobj_ex"),
        (b"\x93", "stack_global"), (b"\x94", "memoize"), (b"\x95", "frame"), (b"\x96", "bytearray8"),
        (b"\x97", "next_buffer"), (b"\x98", "readonly_buffer")):
    _DISPATCH[_code[0]] = getattr(_Machine, "op_" + _name)
del _code, _name


# --------------------------------------------------------------------------- reports and entry points

class ScanReport:
    """What a scan found: every global referenced, which are not allowed, and why a file is refused."""

    def __init__(self, name: str, allow: Allowlist):
        self.name = name
        self.allow = allow
        self.globals = []  # display names, first reference order, unique
        self.disallowed = []
        self.problem = None
        self.position = None
        self.compression = "none"
        self.protocol = 0
        self.arrays = 0
        self.nested = 0
        self.opcodes = 0
        self._seen = set()
        self._special_seen = False

    def _reference(self, module: str, name: str) -> None:
        pair = (module, name)
        if pair in (NAW, DTYPE) or module == "numpy.dtypes" or module.startswith("numpy.dtypes."):
            self._special_seen = True
        if pair in self._seen:
            return
        self._seen.add(pair)
        label = display_name(module, name)
        self.globals.append(label)
        if pair not in self.allow:
            self.disallowed.append(label)

    @property
    def pairs(self):
        return set(self._seen)

    @property
    def ok(self) -> bool:
        return not self.disallowed and self.problem is None

    def hints(self) -> list[str]:
        out = []
        for label in self.disallowed:
            pair = parse_global(label)
            if pair in _HINTS:
                out.append("%s: %s" % (label, _HINTS[pair]))
        return out

    def message(self) -> str:
        parts = []
        if self.disallowed:
            parts.append(
                "%s references %s outside the allowlist of what scikit-learn models are made of: %s "
                "(unpickling imports and may call each of them, so it would run code)"
                % (self.name, "a global" if len(self.disallowed) == 1 else "globals", ", ".join(self.disallowed)))
            hints = self.hints()
            if hints:
                parts.append("; ".join(hints))
        if self.problem:
            where = " at byte %d of the %spickle stream" % (self.position, "decompressed " if self.compression != "none" else "") \
                if self.position is not None else ""
            parts.append("%s cannot be verified as a safe pickle%s: %s" % (self.name, where, self.problem))
        if not parts:
            return "%s: %d globals, all allowed" % (self.name, len(self.globals))
        parts.append("refused: if you trust this file, list the globals in trusted_globals, "
                     "or set trust_pickle: true to switch the check off for this model")
        return "; ".join(parts)

    def to_json(self) -> dict:
        return {"globals": sorted(self.globals), "disallowed": list(self.disallowed), "problem": self.problem,
                "compression": self.compression, "protocol": self.protocol, "arrays": self.arrays,
                "nested_pickles": self.nested}


def scan(fileobj, allow: Allowlist = None, name: str = "pickle") -> ScanReport:
    """Walk a pickle/joblib file object to its end without executing anything."""
    allow = default_allowlist() if allow is None else allow
    report = ScanReport(name, allow)
    try:
        report.compression, stream = open_stream(fileobj)
    except UnsupportedFormat as exc:
        report.problem = str(exc)
        return report
    src = _Source(stream)
    machine = _Machine(src, report)
    try:
        first = stream.peek(1)[:1]
        if first and first[0] not in _DISPATCH:
            raise _Refuse("it is not a pickle (first byte 0x%02x is no pickle opcode)" % first[0])
        machine.run()
        if machine.framer.remaining() or not src.at_end():
            raise _Refuse("there is data after the end of the pickle (STOP)")
    except _Refuse as exc:
        report.problem = str(exc)
        report.position = machine.framer.position()
    except UnsupportedFormat as exc:
        report.problem = str(exc)
    except RecursionError:
        report.problem = "the pickle is nested too deeply to verify"
    except Exception as exc:  # noqa: BLE001 - fail closed: whatever the walk cannot handle is refused
        report.problem = "internal error while verifying (%s: %s)" % (type(exc).__name__, exc)
    return report


def scan_bytes(data: bytes, allow: Allowlist = None, name: str = "pickle") -> ScanReport:
    return scan(io.BytesIO(data), allow, name)


def scan_path(path, allow: Allowlist = None, name: str = None) -> ScanReport:
    with open(path, "rb") as handle:
        return scan(handle, allow, name or os.path.basename(str(path)))


def check(report: ScanReport) -> ScanReport:
    if not report.ok:
        raise PickleRefused(report)
    return report
