"""The model manifest (/model/manifest.json): writing, reading and checksum checks.

The manifest is the contract between ``prepare`` (build time) and ``serve``
(run time). Everything ``serve`` needs is in it, and every model file it
loads is listed with its sha256 so nothing unverified is ever deserialised.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
FRAMEWORKS = ("sklearn", "onnx", "keras", "tensorflow", "torchscript")


class ManifestError(Exception):
    """The manifest is missing, malformed, or does not match the files."""


class ChecksumError(ManifestError):
    """A model file's sha256 differs from the manifest (or the file is missing)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_files(root: str | os.PathLike, rel: str) -> list[str]:
    """Relative paths (posix) of ``rel`` under ``root``: the file itself, or every file in the dir."""
    base = Path(root)
    target = base / rel
    if target.is_dir():
        out = []
        for dirpath, dirnames, filenames in os.walk(target):
            dirnames.sort()
            for fn in sorted(filenames):
                out.append(Path(dirpath, fn).relative_to(base).as_posix())
        return out
    return [Path(rel).as_posix()]


def hash_tree(root: str | os.PathLike, rels: list[str]) -> dict[str, str]:
    files: dict[str, str] = {}
    for rel in rels:
        for f in list_files(root, rel):
            files[f] = sha256_file(Path(root, f))
    return dict(sorted(files.items()))


def dumps(manifest: dict) -> str:
    """Deterministic serialisation: sorted keys, fixed separators, trailing newline."""
    return json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write(model_dir: str | os.PathLike, manifest: dict) -> Path:
    path = Path(model_dir, MANIFEST_NAME)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(dumps(manifest), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _safe_rel(rel: str) -> bool:
    p = Path(rel)
    return not p.is_absolute() and ".." not in p.parts and rel != ""


def load(model_dir: str | os.PathLike) -> dict:
    path = Path(model_dir, MANIFEST_NAME)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path} not found (was `prepare` run?)") from None
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from None
    validate(manifest, str(path))
    return manifest


def validate(manifest: Any, where: str = "manifest") -> None:
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where}: top level must be an object")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(
            f"{where}: schema_version {manifest.get('schema_version')!r} is not supported "
            f"(this runtime reads {SCHEMA_VERSION})"
        )
    for key in ("name", "version", "framework", "entrypoint", "files", "inputs", "outputs"):
        if key not in manifest:
            raise ManifestError(f"{where}: missing key {key!r}")
    if manifest["framework"] not in FRAMEWORKS:
        raise ManifestError(f"{where}: unknown framework {manifest['framework']!r}")
    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        raise ManifestError(f"{where}: 'files' must be a non-empty object of path -> sha256")
    for rel, digest in files.items():
        if not _safe_rel(rel):
            raise ManifestError(f"{where}: unsafe file path {rel!r}")
        if not (isinstance(digest, str) and len(digest) == 64):
            raise ManifestError(f"{where}: bad sha256 for {rel!r}")
    if not _safe_rel(manifest["entrypoint"]):
        raise ManifestError(f"{where}: unsafe entrypoint {manifest['entrypoint']!r}")
    safety = manifest.get("safety")
    if safety is not None:
        if not isinstance(safety, dict):
            raise ManifestError(f"{where}: 'safety' must be an object")
        trusted = safety.get("trusted_globals", [])
        if not isinstance(trusted, list) or not all(isinstance(g, str) for g in trusted):
            raise ManifestError(f"{where}: safety.trusted_globals must be a list of strings")
        for key in ("trust_pickle", "trust_model_code"):
            if not isinstance(safety.get(key, False), bool):
                raise ManifestError(f"{where}: safety.{key} must be true or false")


def entry_files(manifest: dict) -> list[str]:
    """The manifest files that make up the served entrypoint (a file or a directory)."""
    ep = manifest["entrypoint"].rstrip("/")
    return [f for f in manifest["files"] if f == ep or f.startswith(ep + "/")]


def verify_files(model_dir: str | os.PathLike, manifest: dict) -> None:
    """Check every file listed in the manifest. Raises ChecksumError on the first problem."""
    for rel, want in manifest["files"].items():
        path = Path(model_dir, rel)
        try:
            got = sha256_file(path)
        except FileNotFoundError:
            raise ChecksumError(f"model file {rel} listed in the manifest is missing") from None
        if got != want:
            raise ChecksumError(
                f"checksum mismatch for {rel}: manifest says sha256 {want}, file has {got}; refusing to load"
            )
    if not entry_files(manifest):
        raise ChecksumError(f"entrypoint {manifest['entrypoint']} is not covered by the manifest's files")


def read_verified(model_dir: str | os.PathLike, manifest: dict, rel: str) -> bytes:
    """Read one file and check its hash on the very bytes that will be deserialised."""
    want = manifest["files"].get(rel)
    if want is None:
        raise ChecksumError(f"{rel} is not listed in the manifest; refusing to load it")
    try:
        data = Path(model_dir, rel).read_bytes()
    except FileNotFoundError:
        raise ChecksumError(f"model file {rel} listed in the manifest is missing") from None
    got = sha256_bytes(data)
    if got != want:
        raise ChecksumError(
            f"checksum mismatch for {rel}: manifest says sha256 {want}, file has {got}; refusing to load"
        )
    return data
