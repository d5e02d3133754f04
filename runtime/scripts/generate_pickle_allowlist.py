#!/usr/bin/env python3
"""Write modelops_runtime/allowlist/generated.txt: the part of the pickle allowlist that is enumerated.

Run it in the runtime venv (the pinned scikit-learn, numpy and scipy of requirements/*.txt):

    .venv-runtime/bin/python runtime/scripts/generate_pickle_allowlist.py          # rewrite the file
    .venv-runtime/bin/python runtime/scripts/generate_pickle_allowlist.py --check  # exit 1 when stale

runtime/tests/test_pickle_safety.py regenerates it and fails when the committed file differs, so
a version bump of those packages comes with a reviewed allowlist diff.

What is enumerated (everything else the allowlist holds is in allowlist/base.txt, by hand):

* every class *defined* in scikit-learn (``cls.__module__`` is the module it is found in), outside
  the modules listed in EXCLUDED (tests, test and mocking utilities, vendored code, dataset
  loaders, the ``experimental`` switches, build helpers, callbacks that talk to sockets and
  threads, ``Parallel`` and the ``deprecated`` decorator, HTML/pretty-print and tree-export
  helpers);
* scikit-learn's Cython pickle reconstructors (``__pyx_unpickle_<Class>``, ``newObj``);
* the public functions of the metric and univariate-scoring modules that fitted models keep as
  ``score_func``/``scoring`` (they compute on arrays and touch nothing else), and ``check_array``
  (kept by HistGradientBoosting's categorical preprocessing);
* numpy's scalar types, its ``numpy.dtypes`` classes and the ufuncs of the ``numpy`` namespace
  (estimator parameters such as ``dtype=np.float64`` or ``func=np.log1p`` pickle as these);
* scipy.sparse's matrix and array classes.

Never functions that import by name, read or write files or start processes: the point of an
allowlist is that adding to it is a decision.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.path.join(os.path.dirname(HERE), "modelops_runtime", "allowlist", "generated.txt")

EXCLUDED_PARTS = {"tests", "_testing", "externals", "datasets", "experimental", "_build_utils", "__check_build",
                  "conftest", "callback"}
EXCLUDED = (
    "sklearn.utils.estimator_checks", "sklearn.utils._mocking", "sklearn.utils._show_versions",
    "sklearn.utils.parallel", "sklearn.utils.deprecation", "sklearn.utils.discovery",
    "sklearn.utils._repr_html", "sklearn.utils._estimator_html_repr", "sklearn.utils._pprint",
    "sklearn.tree._export", "sklearn._min_dependencies", "sklearn._distributor_init",
    "sklearn.utils._optional_dependencies",
)
SCORE_MODULES = (
    "sklearn.metrics._classification", "sklearn.metrics._regression", "sklearn.metrics._ranking",
    "sklearn.feature_selection._univariate_selection", "sklearn.feature_selection._mutual_info",
)
EXTRA_FUNCTIONS = ("sklearn.utils.validation.check_array",)


def _excluded(name: str) -> bool:
    if set(name.split(".")) & EXCLUDED_PARTS:
        return True
    return any(name == e or name.startswith(e + ".") for e in EXCLUDED)


def _walk(package):
    mods = []
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if _excluded(info.name):
            continue
        mods.append(importlib.import_module(info.name))
    return mods


def sklearn_entries():
    import sklearn

    out = set()
    for mod in [sklearn] + _walk(sklearn):
        for key, value in vars(mod).items():
            if inspect.isclass(value) and value.__module__ == mod.__name__:
                out.add((mod.__name__, value.__qualname__))
            elif key.startswith("__pyx_unpickle_") or (key == "newObj" and callable(value)):
                out.add((mod.__name__, key))
    for name in SCORE_MODULES:
        mod = importlib.import_module(name)
        for key, value in vars(mod).items():
            if inspect.isfunction(value) and value.__module__ == name and not key.startswith("_"):
                out.add((name, key))
    for dotted in EXTRA_FUNCTIONS:
        module, _, name = dotted.rpartition(".")
        getattr(importlib.import_module(module), name)  # must exist
        out.add((module, name))
    return out


def numpy_entries():
    import numpy as np
    import numpy.dtypes

    out = set()
    for t in set(np.sctypeDict.values()):
        out.add((t.__module__, t.__qualname__))
    for key, value in vars(numpy.dtypes).items():
        if inspect.isclass(value) and issubclass(value, np.dtype):
            out.add(("numpy.dtypes", key))
    for key, value in vars(np).items():
        if isinstance(value, np.ufunc) and getattr(np, value.__name__, None) is value:
            out.add(("numpy", value.__name__))
    return out


def scipy_entries():
    import scipy.sparse
    from scipy.sparse._base import _spbase

    out = set()
    for mod in _walk(scipy.sparse):
        if not mod.__name__.startswith("scipy.sparse._") or mod.__name__.count(".") != 2:
            continue  # linalg, csgraph and their tests are not containers
        for _key, value in vars(mod).items():
            if inspect.isclass(value) and value.__module__ == mod.__name__ and issubclass(value, _spbase):
                out.add((mod.__name__, value.__qualname__))
    return out


def render() -> str:
    warnings.filterwarnings("ignore")
    import numpy
    import scipy
    import sklearn

    def line(pair):
        module, name = pair
        return "%s:%s" % (module, name) if "." in name else "%s.%s" % (module, name)

    sections = [
        ("scikit-learn %s: classes, Cython reconstructors, scoring functions" % sklearn.__version__, sklearn_entries()),
        ("numpy %s: scalar types, numpy.dtypes classes, ufuncs" % numpy.__version__, numpy_entries()),
        ("scipy %s: scipy.sparse containers" % scipy.__version__, scipy_entries()),
    ]
    out = ["# GENERATED by runtime/scripts/generate_pickle_allowlist.py -- do not edit; rerun it after a version bump.",
           "# Exact names (module.name, or module:Qualified.name) that scikit-learn model pickles may reference."]
    for title, entries in sections:
        out.append("")
        out.append("# " + title)
        out.extend(sorted(line(p) for p in entries))
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is stale")
    parser.add_argument("--output", default=TARGET)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        with open(args.output, encoding="utf-8") as handle:
            if handle.read() != text:
                print("%s is stale: rerun %s" % (args.output, os.path.relpath(__file__)), file=sys.stderr)
                return 1
        return 0
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write(text)
    print("wrote %s (%d names)" % (args.output, sum(1 for l in text.splitlines() if l and not l.startswith("#"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
