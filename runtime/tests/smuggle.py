"""Real scikit-learn models with a smuggled callable, written the way an attacker would write them.

Used by the runtime's tests (test_pickle_safety.py) and by the collection's unit and integration
tests (they put runtime/tests on sys.path). Nothing here runs a payload: it only writes files.
Each payload, when the file is unpickled by plain ``joblib.load``, creates the marker file it was
given -- which is how the tests prove that a payload is real (positive control) and that a
refused file ran nothing.
"""

from __future__ import annotations

import bz2
import copy
import gzip
import io
import lzma
import os
import pickle
import shlex
import subprocess
import zlib

import numpy as np


class Forged:
    """A global written by name (GLOBAL / STACK_GLOBAL) whether or not the object exists as such.

    pickle itself writes os.system as ``posix.system`` and refuses names that do not resolve to
    the object; an attacker writes the opcodes by hand, so do we.
    """

    def __init__(self, module: str, name: str):
        self.module = module
        self.name = name

    def __call__(self, *args):  # save_reduce wants a callable
        raise RuntimeError("never called here")


class Call:
    """Unpickling this calls ``func(*args)``; it can itself be the func of another Call."""

    def __init__(self, func, args):
        self.func = func
        self.args = args

    def __reduce__(self):
        return (self.func, self.args)

    def __call__(self, *args):
        raise RuntimeError("never called here")


def payloads(marker: str) -> dict:
    """kind -> (object whose unpickling creates ``marker``, the globals a refusal must name)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import numpy.core as npcore  # numpy 2 keeps the gadget here for old pickles

    touch = "touch " + shlex.quote(marker)
    code = "open(%r, 'w').close()" % marker
    return {
        "os.system": (Call(Forged("os", "system"), (touch,)), ["os.system"]),
        "posix.system": (Call(os.system, (touch,)), ["posix.system"]),
        "subprocess.Popen": (Call(subprocess.Popen, (["touch", marker],)), ["subprocess.Popen"]),
        "builtins.eval": (Call(eval, (code,)), ["builtins.eval"]),
        "builtins.exec": (Call(exec, (code,)), ["builtins.exec"]),
        # an allowed module's attribute path (protocol >= 4 resolves dotted names by getattr)
        "dotted": (Call(Forged("joblib.numpy_pickle", "os.system"), (touch,)), ["joblib.numpy_pickle:os.system"]),
        # numpy's ufunc reconstructor imports any module and returns any attribute of it
        "ufunc_reconstruct": (Call(Call(npcore._ufunc_reconstruct, ("os", "system")), (touch,)),
                              ["numpy.core._ufunc_reconstruct"]),
        "getattr_import": (Call(Call(getattr, (Call(__import__, ("os",)), "system")), (touch,)),
                           ["builtins.getattr", "builtins.__import__"]),
    }


# Kinds whose global only exists as hand-written opcodes: joblib writes object arrays with the
# standard pickler (which cannot forge names), so these are not placed inside object arrays.
FORGED_KINDS = ("os.system", "dotted")
PROTOCOL4_KINDS = ("dotted",)  # dotted names resolve only with protocol >= 4


def _save_forged(self, obj):
    if self.proto >= 4:
        self.save(obj.module)
        self.save(obj.name)
        self.write(pickle.STACK_GLOBAL)
    else:
        self.write(pickle.GLOBAL + obj.module.encode("utf-8") + b"\n" + obj.name.encode("utf-8") + b"\n")
    self.memoize(obj)


class _ForgingPickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()
    dispatch[Forged] = _save_forged


class _NeedsForging(Exception):
    pass


class _StandardPickler(pickle.Pickler):
    """The C pickler (what pickle.dump uses), refusing Forged names it cannot write."""

    def reducer_override(self, obj):
        if type(obj) is Forged:
            raise _NeedsForging()
        return NotImplemented


def _joblib_pickler():
    from joblib.numpy_pickle import NumpyPickler

    class _ForgingJoblibPickler(NumpyPickler):
        dispatch = NumpyPickler.dispatch.copy()
        dispatch[Forged] = _save_forged

    return _ForgingJoblibPickler


FORMATS = ("pickle2", "pickle4", "pickle5", "joblib", "joblib-zlib", "joblib-gzip", "joblib-bz2", "joblib-xz",
           "joblib-lzma")


def dumps(obj, fmt: str) -> bytes:
    """The bytes of ``obj`` as a plain pickle (protocol 2, 4, 5) or a joblib file (compressed or not)."""
    buf = io.BytesIO()
    if fmt.startswith("pickle"):
        try:
            _StandardPickler(buf, protocol=int(fmt[6:])).dump(obj)
        except _NeedsForging:
            buf = io.BytesIO()
            _ForgingPickler(buf, protocol=int(fmt[6:])).dump(obj)
        return buf.getvalue()
    _joblib_pickler()(buf, protocol=4).dump(obj)
    raw = buf.getvalue()
    compress = {
        "joblib": lambda d: d,
        "joblib-zlib": lambda d: zlib.compress(d, 3),
        "joblib-gzip": lambda d: gzip.compress(d, 3, mtime=0),
        "joblib-bz2": lambda d: bz2.compress(d, 3),
        "joblib-xz": lambda d: lzma.compress(d, format=lzma.FORMAT_XZ),
        "joblib-lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    }[fmt]
    return compress(raw)


def smuggle(model, payload, where: str = "attribute"):
    """A copy of a fitted model carrying ``payload``.

    where: ``attribute`` (one more attribute, written after the model's arrays), ``object_array``
    (inside an object-dtype array: joblib writes it as a nested pickle), ``step`` (on the last step of
    a Pipeline or the first estimator of an ensemble).
    """
    model = copy.deepcopy(model)
    target = model
    if where == "step":
        if hasattr(model, "steps"):
            target = model.steps[-1][1]
        elif hasattr(model, "estimators_"):
            target = model.estimators_[0]
    if where == "object_array":
        value = np.empty(2, dtype=object)
        value[0], value[1] = "category", payload
    else:
        value = payload
    target.zz_extra_ = value
    return model


def evil_logistic_regression(marker: str, kind: str = "posix.system", where: str = "attribute"):
    """The issue's model: a LogisticRegression on iris with one extra attribute whose pickle runs a command."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    payload, names = payloads(marker)[kind]
    return smuggle(model, payload, where), names
