# -*- coding: utf-8 -*-
# Copyright: modelops.serving contributors
# Apache License 2.0 (see galaxy.yml)
"""Model packaging: content detection, build contexts, wheelhouses, image builds.

Everything here is importable and unit-tested; the model_package module is a
thin AnsibleModule wrapper around :func:`package`.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

FRAMEWORKS = ("sklearn", "onnx", "keras", "tensorflow", "torchscript")
LABEL_PREFIX = "io.modelops."
CONTENT_HASH_LABEL = LABEL_PREFIX + "content-hash"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Frameworks whose pickles we accept, by top-level module of the estimator.
_PICKLE_FRAMEWORKS = {"sklearn": "sklearn"}
_FOREIGN_PICKLES = ("xgboost", "lightgbm", "catboost", "torch", "tensorflow", "keras", "statsmodels", "pandas")


class PackagingError(Exception):
    """A user-facing packaging failure; the message names the problem."""


# --------------------------------------------------------------------------- hashing

def sha256_file(path, bufsize=1024 * 1024):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(bufsize)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def tree_files(root):
    """Relative paths of every regular file below root (or root itself), sorted."""
    if os.path.isfile(root):
        return [os.path.basename(root)]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                raise PackagingError("%s is a symbolic link; model sources must be plain files" % full)
            out.append(os.path.relpath(full, root))
    return sorted(out)


def hash_tree(root):
    """Content hash of a directory: sha256 over (relative path, file sha256) pairs."""
    digest = hashlib.sha256()
    for rel in tree_files(root):
        digest.update(rel.replace(os.sep, "/").encode("utf-8") + b"\0")
        digest.update(sha256_file(os.path.join(root, rel)).encode("ascii") + b"\n")
    return digest.hexdigest()


# --------------------------------------------------------------------------- detection

def _read_head(path, size=4096):
    with open(path, "rb") as handle:
        return handle.read(size)


def default_runtime_dir():
    """The serving runtime shipped next to these plugins (a checkout or an installed collection)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(os.path.dirname(here)), "runtime")


_RUNTIME_MODULES = {}


def runtime_module(runtime_dir, name):
    """Import one standard-library module of the serving runtime from its file.

    The safety checks (picklescan, formatscan) exist once, in the runtime that goes into every
    image; the packager runs that same code on the controller instead of a copy of it.
    """
    path = os.path.join(runtime_dir or default_runtime_dir(), "modelops_runtime", name + ".py")
    if not os.path.isfile(path):
        raise PackagingError("the serving runtime at %s has no %s (it predates the model safety checks)"
                             % (runtime_dir, os.path.basename(path)))
    real = os.path.realpath(path)
    key = (real, os.path.getmtime(real))
    module = _RUNTIME_MODULES.get(key)
    if module is None:
        modname = "_modelops_runtime_%s_%s" % (name, hashlib.sha256(real.encode("utf-8")).hexdigest()[:12])
        spec = importlib.util.spec_from_file_location(modname, real)
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        spec.loader.exec_module(module)
        _RUNTIME_MODULES[key] = module
    return module


def _pickle_scan(path, runtime_dir, trusted_globals=()):
    """The runtime's scan of a pickle/joblib file (None when it is not one), with its container."""
    picklescan = runtime_module(runtime_dir, "picklescan")
    try:
        allow = picklescan.default_allowlist().extended(trusted_globals)
    except ValueError as exc:
        raise PackagingError("trusted_globals: %s" % exc)
    with open(path, "rb") as handle:
        head = handle.read(16)
    kind = picklescan.sniff(head)
    report = picklescan.scan_path(path, allow, name=path)
    if kind in ("joblib-compat", "lz4"):
        raise PackagingError("%s is %s" % (path, report.problem))
    if kind == "none" and head[:1] != b"\x80" and report.problem is not None:
        return None  # not a protocol 2+ pickle, and no clean protocol 0/1 pickle either
    if kind != "none" and report.opcodes == 0:
        return None  # starts like a compressed file but holds no pickle
    return report


def _classify_pickle(path, report):
    modules = [name.split(":", 1)[0] for name in report.globals]
    if not modules:
        if report.problem is not None:
            raise PackagingError("%s starts like a pickle but is corrupt (no readable objects): %s" % (path, report.problem))
        raise PackagingError("%s is a pickle that references no Python classes; it holds no model" % path)
    tops = set(m.split(".", 1)[0] for m in modules)
    for top, framework in _PICKLE_FRAMEWORKS.items():
        if top in tops:
            return framework
    foreign = sorted(tops.intersection(_FOREIGN_PICKLES))
    if foreign:
        raise PackagingError(
            "%s is a pickle of a %s object; pickled models are only supported for scikit-learn "
            "(export the model to ONNX instead)" % (path, foreign[0]))
    raise PackagingError(
        "%s is a pickle but references no scikit-learn class (found modules: %s; globals: %s)"
        % (path, ", ".join(sorted(tops)), ", ".join(report.globals[:12])))


def _classify_zip(path):
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise PackagingError("%s is a damaged zip archive: %s" % (path, exc))
    if bad:
        raise PackagingError("%s is a damaged zip archive (bad entry %s)" % (path, bad))
    base = set(n.split("/", 1)[-1] for n in names)
    if "config.json" in names and ("model.weights.h5" in names or "metadata.json" in names):
        return "keras"
    if "data.pkl" in base and ("constants.pkl" in base or any("/code/" in n for n in names)):
        return "torchscript"
    if "data.pkl" in base:
        raise PackagingError(
            "%s is a PyTorch checkpoint (torch.save), not TorchScript; export it with torch.jit.script/trace and save that" % path)
    return None


def inspect_model(path, runtime_dir=None, trusted_globals=()):
    """(framework, pickle scan report or None) from a model's content.

    Raises PackagingError naming the file and the problem when the content is unknown, corrupt
    or not a supported model. A pickle/joblib file is walked to its end by the runtime's scanner
    (never unpickled); its report is what check_model_safety judges.
    """
    if not os.path.exists(path):
        raise PackagingError("model path %s does not exist" % path)
    if os.path.isdir(path):
        entries = set(os.listdir(path))
        if "saved_model.pb" in entries or "saved_model.pbtxt" in entries:
            return "tensorflow", None
        raise PackagingError(
            "%s is a directory without saved_model.pb; only TensorFlow SavedModel directories are supported "
            "(give the model file itself otherwise)" % path)
    size = os.path.getsize(path)
    if size == 0:
        raise PackagingError("model file %s is empty" % path)
    head = _read_head(path, 16)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "keras", None
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        framework = _classify_zip(path)
        if framework:
            return framework, None
        raise PackagingError("%s is a zip archive but neither a Keras .keras file nor a TorchScript archive" % path)
    report = _pickle_scan(path, runtime_dir, trusted_globals)
    if report is not None:
        return _classify_pickle(path, report), report
    with open(path, "rb") as handle:
        data = handle.read()
    if runtime_module(runtime_dir, "formatscan").looks_like_onnx(data):
        return "onnx", None
    ext = os.path.splitext(path)[1].lower()
    if ext == ".onnx":
        raise PackagingError("%s has an .onnx name but is not a valid ONNX model (protobuf ModelProto); the file is corrupt" % path)
    if ext in (".pkl", ".pickle", ".joblib"):
        raise PackagingError("%s has a %s name but is not a pickle or joblib file; the file is corrupt" % (path, ext))
    raise PackagingError(
        "cannot tell the framework of %s from its content (supported: scikit-learn pickle/joblib, ONNX, "
        "Keras .h5/.keras, TensorFlow SavedModel directory, TorchScript .pt)" % path)


def detect_framework(path, runtime_dir=None):
    """Tell a model's framework from its content (the extension only breaks ties); see inspect_model."""
    return inspect_model(path, runtime_dir)[0]


# --------------------------------------------------------------------------- safety

PICKLE_FRAMEWORKS = ("sklearn",)
CODE_FRAMEWORKS = ("keras", "tensorflow", "torchscript")


def check_model_safety(path, framework, params, runtime_dir, report=None):
    """Refuse a model file that would run code when loaded, before anything is built.

    Returns (record, warnings): the record says what was checked and trusted (it goes into the
    module result; the image's manifest records the same from the build). Raises PackagingError
    naming each offending global (pickles) or construct (Keras, SavedModel, TorchScript) and the file.
    """
    trusted = list(params.get("trusted_globals") or [])
    trust_pickle = bool(params.get("trust_pickle"))
    trust_code = bool(params.get("trust_model_code"))
    name = "%s:%s" % (params.get("name"), params.get("version"))
    if (trusted or trust_pickle) and framework not in PICKLE_FRAMEWORKS:
        raise PackagingError("trusted_globals and trust_pickle apply to scikit-learn pickle/joblib files; %s holds a %s model"
                             % (path, framework))
    if trust_code and framework not in CODE_FRAMEWORKS:
        raise PackagingError("trust_model_code applies to Keras, SavedModel and TorchScript models; %s holds a %s model%s"
                             % (path, framework, " (pickles: trusted_globals, trust_pickle)" if framework == "sklearn" else ""))
    record = {"trusted_globals": sorted(set(trusted)), "trust_pickle": trust_pickle, "trust_model_code": trust_code}
    warnings = []
    if framework in PICKLE_FRAMEWORKS:
        if report is None or trusted:
            report = _pickle_scan(path, runtime_dir, trusted)  # with the model's trusted globals
        record["globals"] = sorted(report.globals)
        if trust_pickle:
            record["checked"] = False
            warnings.append(
                "trust_pickle is true for %s: %s was NOT checked against the allowlist; whatever code it references "
                "runs at build time and in every container that serves it%s"
                % (name, path, " (it references %s, outside the allowlist)" % ", ".join(report.disallowed)
                   if report.disallowed else ""))
        elif not report.ok:
            raise PackagingError("refusing to package %s: %s" % (name, report.message()))
        else:
            record["checked"] = True
        return record, warnings
    if framework in CODE_FRAMEWORKS:
        formatscan = runtime_module(runtime_dir, "formatscan")
        check = {"keras": formatscan.check_keras, "tensorflow": formatscan.check_savedmodel,
                 "torchscript": formatscan.check_torchscript}[framework]
        found = check(path)
        found.name = path
        record["problems"] = list(found.problems)
        if found.problems and not trust_code:
            raise PackagingError("refusing to package %s: %s" % (name, found.message()))
        record["checked"] = True
        if trust_code:
            warnings.append("trust_model_code is true for %s: %s is served even though it %s"
                            % (name, path, "; ".join(found.problems) if found.problems
                               else "was checked (nothing found); Keras loads it with safe_mode off"))
        return record, warnings
    if framework == "onnx":
        found = runtime_module(runtime_dir, "formatscan").check_onnx(path)
        found.name = path
        if found.problems:
            raise PackagingError("refusing to package %s: %s" % (name, found.message()))
        record["checked"] = True
        return record, warnings
    record["checked"] = False
    return record, warnings


# --------------------------------------------------------------------------- requirements

def read_requirements(runtime_dir, group):
    """Pinned requirement lines of one group (base, sklearn, onnx, convert, ...)."""
    path = os.path.join(runtime_dir, "modelops_runtime", "requirements", group + ".txt")
    if not os.path.isfile(path):
        raise PackagingError("the serving runtime at %s has no requirement list %s" % (runtime_dir, path))
    lines = []
    with open(path) as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if line:
                lines.append(line)
    return lines


def requirement_groups(framework, convert_to_onnx=True):
    """Requirement groups the image build installs for a framework.

    The builder stage needs them all; the final image only the served set.
    scikit-learn models may be converted to ONNX at packaging time, so their
    set includes ONNX Runtime and the converter.
    """
    groups = ["base", framework if framework != "keras" else "keras"]
    if framework == "sklearn":
        groups.append("onnx")
        if convert_to_onnx:
            groups.append("convert")
    return groups


def runtime_version(runtime_dir):
    init = os.path.join(runtime_dir, "modelops_runtime", "__init__.py")
    try:
        with open(init) as handle:
            match = re.search(r'__version__\s*=\s*["\']([^"\']+)["\']', handle.read())
    except IOError:
        match = None
    if not match:
        raise PackagingError("%s is not the modelops serving runtime (no modelops_runtime/__init__.py with __version__)" % runtime_dir)
    return match.group(1)


def manylinux_platforms(arch="x86_64", glibc_max=36):
    """Wheel platform tags a Debian 12 (glibc 2.36) image can run, newest first."""
    tags = ["manylinux_2_%d_%s" % (minor, arch) for minor in range(glibc_max, 4, -1)]
    tags += ["manylinux2014_%s" % arch]
    if arch in ("x86_64", "i686"):
        tags += ["manylinux2010_%s" % arch, "manylinux1_%s" % arch]
    return tags


def wheelhouse_set_dir(wheelhouse, requirements, python_version, arch):
    key = hashlib.sha256(json.dumps([sorted(requirements), python_version, arch]).encode("utf-8")).hexdigest()[:16]
    return os.path.join(wheelhouse, "sets", key)


def fill_wheelhouse(set_dir, requirements, python_version="3.11", arch="x86_64", index_url=None,
                    ca_bundle=None, extra_args=None, python=None, runner=subprocess.run):
    """Download wheels (with their dependencies) for the image's Python into set_dir.

    Uses `pip download` on the controller; the image build itself installs with
    --no-index from these files, so builds never reach the internet.
    """
    tmp = set_dir + ".part"
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    req_file = os.path.join(tmp, "requirements.txt")
    with open(req_file, "w") as handle:
        handle.write("\n".join(requirements) + "\n")
    cmd = [python or sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
           "--dest", tmp, "--only-binary=:all:", "--python-version", python_version,
           "--implementation", "cp", "-r", req_file]
    for tag in manylinux_platforms(arch):
        cmd += ["--platform", tag]
    if index_url:
        cmd += ["--index-url", index_url]
    if ca_bundle:
        cmd += ["--cert", ca_bundle]
    cmd += list(extra_args or [])
    proc = runner(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        shutil.rmtree(tmp, ignore_errors=True)
        raise PackagingError("pip download for the wheelhouse failed (exit %d): %s" % (proc.returncode, tail))
    os.remove(req_file)
    wheels = sorted(f for f in os.listdir(tmp) if f.endswith(".whl"))
    if not wheels:
        raise PackagingError("pip download produced no wheels in %s" % tmp)
    with open(os.path.join(tmp, "requirements.lock"), "w") as handle:
        handle.write("\n".join(requirements) + "\n")
    if os.path.isdir(set_dir):
        shutil.rmtree(set_dir)
    os.rename(tmp, set_dir)
    return wheels


def wheelhouse_ready(set_dir):
    return os.path.isfile(os.path.join(set_dir, "requirements.lock")) and any(
        f.endswith(".whl") for f in os.listdir(set_dir))


# --------------------------------------------------------------------------- build context

DOCKERFILE = """\
# Generated by modelops.serving.model_package; the build never reaches the
# internet: Python packages come from wheels/ (the controller's wheelhouse).
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS prepare
ENV PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8
COPY wheels/ /build/wheels/
COPY requirements/ /build/requirements/
RUN python3 -m venv /opt/modelops/prepare \\
 && /opt/modelops/prepare/bin/pip install --no-index --find-links /build/wheels -r /build/requirements/prepare.txt
COPY runtime/ /opt/modelops/lib/
COPY src/ /build/src/
COPY options.json /build/options.json
RUN PYTHONPATH=/opt/modelops/lib /opt/modelops/prepare/bin/python -m modelops_runtime prepare \\
      --source /build/src --options /build/options.json --out /model
# The serving venv holds only what the served framework needs.
RUN served=$(/opt/modelops/prepare/bin/python -c 'import json; print(json.load(open("/model/manifest.json"))["framework"])') \\
 && python3 -m venv /opt/modelops/venv \\
 && /opt/modelops/venv/bin/pip install --no-index --find-links /build/wheels \\
      -r /build/requirements/base.txt -r /build/requirements/$served.txt \\
 && /opt/modelops/venv/bin/python -m compileall -q /opt/modelops/lib >/dev/null \\
 && PYTHONPATH=/opt/modelops/lib /opt/modelops/venv/bin/python -m modelops_runtime verify --model-dir /model

FROM ${BASE_IMAGE}
COPY --from=prepare /opt/modelops/venv /opt/modelops/venv
COPY --from=prepare /opt/modelops/lib /opt/modelops/lib
COPY --from=prepare /model /model
COPY healthcheck.py /opt/modelops/healthcheck.py
ENV PYTHONPATH=/opt/modelops/lib PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LANG=C.UTF-8 \\
    MODELOPS_HOST=0.0.0.0 MODELOPS_PORT=8080
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \\
  CMD ["/opt/modelops/venv/bin/python", "/opt/modelops/healthcheck.py"]
ENTRYPOINT ["/opt/modelops/venv/bin/python", "-m", "modelops_runtime", "serve", "--model-dir", "/model"]
"""


HEALTHCHECK_SCRIPT = """\
# Container healthcheck: the runtime answers ready on its own port.
import http.client
import os
import sys

conn = http.client.HTTPConnection("127.0.0.1", int(os.environ.get("MODELOPS_PORT", "8080")), timeout=2)
try:
    conn.request("GET", "/v2/health/ready")
    sys.exit(0 if conn.getresponse().status == 200 else 1)
except OSError:
    sys.exit(1)
"""


def _copy_model(src, dest_dir):
    """Copy a model file or SavedModel directory; returns its entrypoint name."""
    name = os.path.basename(os.path.normpath(src))
    target = os.path.join(dest_dir, name)
    if os.path.isdir(src):
        shutil.copytree(src, target, symlinks=False)
    else:
        shutil.copyfile(src, target)
    return name


def _normalise_mtimes(root):
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (0, 0))


def build_context(dest, params, framework, runtime_dir, wheel_dir):
    """Write a deterministic docker build context into dest; returns its facts.

    dest gets: Dockerfile, options.json, requirements/, runtime/, src/, wheels/.
    The content hash covers all of it (plus the base image name), so the same
    inputs always give the same hash.
    """
    src_dir = os.path.join(dest, "src")
    os.makedirs(src_dir)
    entrypoint = _copy_model(params["model_path"], src_dir)
    options = {
        "name": params["name"],
        "version": params["version"],
        "framework": framework,
        "entrypoint": entrypoint,
        "convert_to_onnx": bool(params.get("convert_to_onnx", True)),
    }
    if params.get("reference_data"):
        ref = params["reference_data"]
        if not os.path.isfile(ref):
            raise PackagingError("reference_data %s does not exist" % ref)
        ext = os.path.splitext(ref)[1].lower()
        if ext not in (".csv", ".npy"):
            raise PackagingError("reference_data %s must be a .csv file with a header row or a .npy file" % ref)
        ref_name = "reference" + ext
        if ref_name == entrypoint:
            ref_name = "reference-data" + ext
        shutil.copyfile(ref, os.path.join(src_dir, ref_name))
        options["reference_data"] = ref_name
    if params.get("sample"):
        sample = dict(params["sample"])
        if params.get("expected") is not None:
            sample["expected"] = params["expected"]
        if params.get("tolerance") is not None:
            sample.setdefault("tolerance", params["tolerance"])
        options["sample"] = sample
    for key in ("inputs", "outputs", "description"):
        if params.get(key):
            options[key] = params[key]
    # Trust decisions travel to the build (prepare checks with them and records them in the
    # manifest, which the runtime reads); only when set, so other models' build inputs are unchanged.
    if params.get("trusted_globals"):
        options["trusted_globals"] = sorted(set(params["trusted_globals"]))
    for key in ("trust_pickle", "trust_model_code"):
        if params.get(key):
            options[key] = True
    if params.get("runtime_options"):
        options["runtime"] = dict(params["runtime_options"])
    with open(os.path.join(dest, "options.json"), "w") as handle:
        json.dump(options, handle, indent=2, sort_keys=True)
        handle.write("\n")

    req_dir = os.path.join(dest, "requirements")
    os.makedirs(req_dir)
    groups = requirement_groups(framework, options["convert_to_onnx"])
    prepare_reqs = []
    for group in groups:
        lines = read_requirements(runtime_dir, group)
        prepare_reqs.extend(lines)
    for group in ("base", "sklearn", "onnx", "keras", "tensorflow", "torchscript", "convert"):
        src = os.path.join(runtime_dir, "modelops_runtime", "requirements", group + ".txt")
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(req_dir, group + ".txt"))
    with open(os.path.join(req_dir, "prepare.txt"), "w") as handle:
        handle.write("\n".join(prepare_reqs) + "\n")

    shutil.copytree(os.path.join(runtime_dir, "modelops_runtime"), os.path.join(dest, "runtime", "modelops_runtime"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
    wheels_dest = os.path.join(dest, "wheels")
    os.makedirs(wheels_dest)
    for wheel in sorted(os.listdir(wheel_dir)):
        if wheel.endswith(".whl"):
            src = os.path.join(wheel_dir, wheel)
            try:
                os.link(src, os.path.join(wheels_dest, wheel))
            except OSError:
                shutil.copyfile(src, os.path.join(wheels_dest, wheel))
    with open(os.path.join(dest, "Dockerfile"), "w") as handle:
        handle.write(DOCKERFILE)
    with open(os.path.join(dest, "healthcheck.py"), "w") as handle:
        handle.write(HEALTHCHECK_SCRIPT)
    _normalise_mtimes(dest)

    model_files = {}
    model_root = os.path.join(src_dir, entrypoint)
    for rel in tree_files(model_root):
        full = model_root if os.path.isfile(model_root) else os.path.join(model_root, rel)
        key = entrypoint if os.path.isfile(model_root) else "%s/%s" % (entrypoint, rel.replace(os.sep, "/"))
        model_files[key] = sha256_file(full)
    digest = hashlib.sha256()
    digest.update(("base_image=%s\n" % params["base_image"]).encode("utf-8"))
    digest.update(hash_tree(dest).encode("ascii"))
    return {
        "content_hash": digest.hexdigest(),
        "entrypoint": entrypoint,
        "options": options,
        "model_files": model_files,
        "requirements": prepare_reqs,
    }


def image_labels(params, framework, facts, runtime_ver):
    labels = {
        "org.opencontainers.image.title": params["name"],
        "org.opencontainers.image.version": str(params["version"]),
        "org.opencontainers.image.description": "%s model %s served by the modelops runtime" % (framework, params["name"]),
        LABEL_PREFIX + "model.name": params["name"],
        LABEL_PREFIX + "model.version": str(params["version"]),
        LABEL_PREFIX + "model.framework": framework,
        LABEL_PREFIX + "model.entrypoint": facts["entrypoint"],
        LABEL_PREFIX + "model.sha256": json.dumps(facts["model_files"], sort_keys=True, separators=(",", ":")),
        LABEL_PREFIX + "runtime.version": runtime_ver,
        LABEL_PREFIX + "created-by": "modelops.serving.model_package",
        CONTENT_HASH_LABEL: facts["content_hash"],
    }
    for key, value in sorted((params.get("resources") or {}).items()):
        labels[LABEL_PREFIX + "resources." + key] = str(value)
    return labels


def image_reference(params):
    repository = params.get("repository") or "modelops/%s" % params["name"]
    if params.get("registry"):
        repository = "%s/%s" % (params["registry"].rstrip("/"), repository)
    return repository, str(params["version"])


def validate_params(params):
    if not NAME_RE.match(params["name"] or ""):
        raise PackagingError("name %r must be lower-case letters, digits, '.', '_' or '-' (starting with a letter or digit, at most 63)"
                             % params["name"])
    if not VERSION_RE.match(str(params["version"] or "")):
        raise PackagingError("version %r may only hold letters, digits, '.', '_' and '-' (at most 128)" % params["version"])
    if params.get("framework") and params["framework"] not in FRAMEWORKS:
        raise PackagingError("framework %r is not one of %s" % (params["framework"], ", ".join(FRAMEWORKS)))
    if params.get("sample") is not None:
        sample = params["sample"]
        if not isinstance(sample, dict) or not ("instances" in sample or "inputs" in sample):
            raise PackagingError("sample must be a dict with 'instances' (rows) or 'inputs' (V2 tensors)")


# --------------------------------------------------------------------------- docker

def archive_image_id(path):
    """The image ID stored in a `docker save` tarball, or None."""
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile("manifest.json")
            manifest = json.load(member) if member else None
    except (tarfile.TarError, IOError, KeyError, ValueError):
        return None
    if not manifest:
        return None
    config = manifest[0].get("Config", "")
    base = config.rsplit("/", 1)[-1]
    base = base[:-5] if base.endswith(".json") else base
    return "sha256:" + base if base else None


def read_manifest_from_image(client, image_id):
    """Read /model/manifest.json out of an image without running it."""
    container = client.api.create_container(image_id, command=["true"], entrypoint=[], network_disabled=True)
    try:
        stream, _stat = client.api.get_archive(container["Id"], "/model/manifest.json")
        buf = io.BytesIO(b"".join(stream))
        with tarfile.open(fileobj=buf) as tar:
            member = tar.extractfile("manifest.json")
            return json.load(member)
    finally:
        client.api.remove_container(container["Id"], force=True)


def build_image(client, context_dir, tag, labels, base_image, timeout_log_lines=40):
    """Build with the classic builder through the Docker SDK; returns (image_id, log lines)."""
    lines = []
    error = None
    for chunk in client.api.build(path=context_dir, tag=tag, rm=True, forcerm=True, pull=False, decode=True,
                                  labels=labels, buildargs={"BASE_IMAGE": base_image}):
        if "stream" in chunk:
            lines.extend(l for l in chunk["stream"].splitlines() if l.strip())
        if "error" in chunk:
            error = chunk["error"].strip()
    if error:
        reason = [l for l in lines if "prepare failed:" in l or "configuration error" in l or l.startswith("ERROR")]
        detail = reason[-1].split("prepare failed:", 1)[-1].strip() if reason else error
        raise PackagingError("image build failed: %s\n%s" % (detail, "\n".join(lines[-timeout_log_lines:])))
    return client.images.get(tag).id, lines


def find_image(client, ref):
    from docker.errors import ImageNotFound  # pylint: disable=import-error
    try:
        return client.images.get(ref)
    except ImageNotFound:
        return None


def package(params, client, check_mode=False, tmp_root=None, log=None):
    """Detect, stage, build (when needed), tag, push and archive one model image.

    Returns the result dict of the model_package module.
    """
    log = log or (lambda msg: None)
    validate_params(params)
    model_path = params["model_path"]
    runtime_dir = params["runtime_dir"]
    runtime_ver = runtime_version(runtime_dir)
    detected, pickle_report = inspect_model(model_path, runtime_dir)
    framework = params.get("framework") or detected
    if framework != detected:
        raise PackagingError("framework=%s was given but %s holds a %s model" % (framework, model_path, detected))
    # Before any wheel is fetched or any build context made: a model that would run code is refused here.
    safety, warnings = check_model_safety(model_path, framework, params, runtime_dir, pickle_report)
    repository, tag = image_reference(params)
    ref = "%s:%s" % (repository, tag)
    result = {"changed": False, "image": ref, "framework": framework, "runtime_version": runtime_ver,
              "safety": safety}
    if warnings:
        result["warnings"] = list(warnings)

    groups = requirement_groups(framework, params.get("convert_to_onnx", True))
    requirements = [line for group in groups for line in read_requirements(runtime_dir, group)]
    set_dir = wheelhouse_set_dir(params["wheelhouse"], requirements, params["python_version"], params["arch"])
    if not wheelhouse_ready(set_dir):
        if not params.get("wheelhouse_fill"):
            raise PackagingError(
                "the wheelhouse %s has no wheels for %s models yet (%s); run with wheelhouse_fill=true on a machine "
                "that reaches a package index, or copy a filled wheelhouse here" % (params["wheelhouse"], framework, set_dir))
        if check_mode:
            result["changed"] = True
            result["msg"] = "would download wheels into %s and build %s" % (set_dir, ref)
            return result
        log("filling wheelhouse %s" % set_dir)
        fill_wheelhouse(set_dir, requirements, params["python_version"], params["arch"], params.get("index_url"),
                        params.get("ca_bundle"))
        result["changed"] = True
        result["wheelhouse_filled"] = True

    tmp_parent = tmp_root or tempfile.gettempdir()
    context_dir = tempfile.mkdtemp(prefix="modelops-build-", dir=tmp_parent)
    try:
        facts = build_context(context_dir, dict(params, model_path=model_path), framework, runtime_dir, set_dir)
        labels = image_labels(params, framework, facts, runtime_ver)
        result["content_hash"] = facts["content_hash"]
        result["model_sha256"] = facts["model_files"]
        existing = find_image(client, ref)
        existing_hash = existing.labels.get(CONTENT_HASH_LABEL) if existing else None
        result["diff"] = {"before": {"image": ref, "content_hash": existing_hash},
                          "after": {"image": ref, "content_hash": facts["content_hash"]}}
        same_model = bool(existing) and existing.labels.get(LABEL_PREFIX + "model.sha256") == labels[LABEL_PREFIX + "model.sha256"]
        if existing and existing_hash != facts["content_hash"] and not params.get("force"):
            if not same_model:
                raise PackagingError(
                    "%s already exists with a different model (content hash %s, new %s); a released version is never "
                    "overwritten: bump version, or set force=true" % (ref, (existing_hash or "none")[:12], facts["content_hash"][:12]))
            if not params.get("rebuild"):
                # Same model files, other build inputs (a newer runtime, options, base image): keep the released
                # image unless asked, so a collection upgrade never changes what a version tag serves.
                result.setdefault("warnings", []).append(
                    "%s was built from the same model files with other build inputs (runtime %s, now %s); "
                    "kept as it is: set rebuild=true to rebuild it"
                    % (ref, existing.labels.get(LABEL_PREFIX + "runtime.version", "?"), runtime_ver))
                existing_hash = facts["content_hash"] = existing.labels.get(CONTENT_HASH_LABEL)
                result["content_hash"] = existing_hash
        if existing and existing_hash == facts["content_hash"]:
            image_id = existing.id
        elif check_mode:
            result["changed"] = True
            result["msg"] = "would build %s" % ref
            return result
        else:
            if params.get("context_dir"):
                keep = params["context_dir"]
                if os.path.isdir(keep):
                    shutil.rmtree(keep)
                shutil.copytree(context_dir, keep)
            log("building %s" % ref)
            image_id, _lines = build_image(client, context_dir, ref, labels, params["base_image"])
            result["changed"] = True
        result["image_id"] = image_id
        result["manifest"] = read_manifest_from_image(client, image_id)
    finally:
        shutil.rmtree(context_dir, ignore_errors=True)

    if params.get("push"):
        if check_mode:
            result["changed"] = True
        else:
            pushed = push_image(client, repository, tag, params.get("registry_auth"))
            result["pushed"] = pushed
            result["changed"] = result["changed"] or pushed["changed"]

    if params.get("archive_path"):
        path = params["archive_path"]
        if archive_image_id(path) != result["image_id"]:
            result["changed"] = True
            if not check_mode:
                save_archive(client, ref, path)
        result["archive_path"] = path
    return result


def push_image(client, repository, tag, auth=None):
    """Push unless the registry already holds this exact image; returns {changed, digest}."""
    from docker.errors import APIError, NotFound  # pylint: disable=import-error
    ref = "%s:%s" % (repository, tag)
    local = client.images.get(ref)
    try:
        remote = client.images.get_registry_data(ref, auth_config=auth or None).id
    except (APIError, NotFound):
        remote = None
    if remote and any(d.endswith("@" + remote) for d in local.attrs.get("RepoDigests", [])):
        return {"changed": False, "digest": remote}
    digest = None
    for chunk in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth or None):
        if "error" in chunk:
            raise PackagingError("push of %s failed: %s" % (ref, chunk["error"]))
        aux = chunk.get("aux") or {}
        digest = aux.get("Digest", digest)
    return {"changed": True, "digest": digest}


def save_archive(client, ref, path):
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise PackagingError("archive_path directory %s does not exist" % directory)
    tmp = path + ".part"
    with open(tmp, "wb") as handle:
        for chunk in client.images.get(ref).save(named=True):
            handle.write(chunk)
    os.rename(tmp, path)
