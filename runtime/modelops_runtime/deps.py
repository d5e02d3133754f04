"""Which pinned requirement files a model image needs (read by the packager).

Files live in ``modelops_runtime/requirements/``:

* ``base.txt``      - the server itself, every model
* ``sklearn.txt``   - scikit-learn models served natively
* ``onnx.txt``      - onnxruntime (ONNX models, and sklearn models converted at prepare time)
* ``keras.txt``     - Keras .keras/.h5 (tensorflow-cpu + h5py)
* ``tensorflow.txt``- TensorFlow SavedModel
* ``torchscript.txt`` - TorchScript (torch CPU build)
* ``convert.txt``   - skl2onnx + onnx, only for ``prepare`` in the builder stage

A scikit-learn model's final image needs both ``sklearn.txt`` and ``onnx.txt``:
whether the ONNX conversion is kept is only decided by ``prepare``.
"""

from __future__ import annotations

from pathlib import Path

REQ_DIR = Path(__file__).resolve().parent / "requirements"

_SERVE = {
    "sklearn": ["base.txt", "sklearn.txt", "onnx.txt"],
    "onnx": ["base.txt", "onnx.txt"],
    "keras": ["base.txt", "keras.txt"],
    "tensorflow": ["base.txt", "tensorflow.txt"],
    "torchscript": ["base.txt", "torchscript.txt"],
}


def requirement_files(framework: str, stage: str = "serve") -> list[Path]:
    """Paths of the requirement files for ``framework`` at ``stage`` ('serve' or 'build')."""
    if framework not in _SERVE:
        raise ValueError(f"unknown framework {framework!r}; expected one of {sorted(_SERVE)}")
    if stage not in ("serve", "build"):
        raise ValueError("stage must be 'serve' or 'build'")
    names = list(_SERVE[framework])
    if stage == "build" and framework == "sklearn":
        names.append("convert.txt")
    return [REQ_DIR / n for n in names]


def requirement_lines(framework: str, stage: str = "serve") -> list[str]:
    """The pinned requirement lines (comments dropped, duplicates removed, order kept)."""
    seen, out = set(), []
    for path in requirement_files(framework, stage):
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and line not in seen:
                seen.add(line)
                out.append(line)
    return out
