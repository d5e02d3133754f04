"""Runtime options: one table drives options.json validation, env vars and CLI flags.

Precedence when serving: CLI flag > environment variable > manifest
``runtime`` section (from options.json at prepare time) > built-in default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return bool(v)
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {v!r}")


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if isinstance(v, bool):
            raise ValueError(f"not an integer: {v!r}")
        if isinstance(v, float) and not v.is_integer():
            raise ValueError(f"not an integer: {v!r}")
        n = int(v)
        if not lo <= n <= hi:
            raise ValueError(f"{n} is outside {lo}..{hi}")
        return n

    return conv


def _float(lo: float, hi: float) -> Callable[[Any], float]:
    def conv(v: Any) -> float:
        if isinstance(v, bool):
            raise ValueError(f"not a number: {v!r}")
        x = float(v)
        if not lo <= x <= hi:
            raise ValueError(f"{x} is outside {lo}..{hi}")
        return x

    return conv


def _optional(conv: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def opt(v: Any) -> Any:
        return None if v is None else conv(v)

    return opt


def _task(v: Any) -> str:
    s = str(v).lower()
    if s not in ("auto", "classification", "regression"):
        raise ValueError(f"must be auto, classification or regression, got {v!r}")
    return s


def _str(v: Any) -> str:
    return str(v)


def _level(v: Any) -> str:
    s = str(v).lower()
    if s not in ("debug", "info", "warning", "error"):
        raise ValueError(f"log level must be debug, info, warning or error, got {v!r}")
    return s


@dataclass(frozen=True)
class Opt:
    key: str
    conv: Callable[[Any], Any]
    default: Any
    help: str
    in_manifest: bool = True  # may be set in options.json "runtime"

    @property
    def env(self) -> str:
        return "MODELOPS_" + self.key.upper()

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


OPTIONS: list[Opt] = [
    Opt("host", _str, "0.0.0.0", "address to listen on", in_manifest=False),
    Opt("port", _int(0, 65535), 8080, "TCP port (0 = pick a free one; the chosen port is logged)", in_manifest=False),
    Opt("workers", _int(1, 64), 1, "worker processes (each loads the model, all share the port via SO_REUSEPORT)"),
    Opt("threads", _int(1, 64), 1, "framework intra-op threads per worker"),
    Opt("cache_size", _int(0, 10_000_000), 0, "LRU prediction cache entries per worker (0 = off)"),
    Opt("max_body_bytes", _int(1024, 1 << 31), 4 * 1024 * 1024, "largest request body accepted (else 413)"),
    Opt("max_header_bytes", _int(1024, 1 << 20), 65536, "largest request head accepted (else 431)"),
    Opt("drift_window", _int(0, 10_000_000), 1000, "rows per worker in the drift sliding window (0 = drift off)"),
    Opt("drain_timeout", _float(0, 3600), 30.0, "seconds to finish in-flight requests after SIGTERM"),
    Opt("keepalive_timeout", _float(0.1, 3600), 75.0, "idle keep-alive connection timeout in seconds"),
    Opt("request_timeout", _float(0.1, 3600), 30.0, "seconds allowed to receive a whole request once started"),
    Opt("allow_non_finite", _bool, False, "accept NaN/Inf input values"),
    Opt("access_log_sample", _float(0, 1), 0.0, "fraction of successful requests logged (errors are always logged, rate limited)"),
    Opt("log_level", _level, "info", "debug, info, warning or error"),
    Opt("exit_on_load_failure", _bool, False, "exit non-zero instead of staying up not-ready when the model cannot be verified/loaded"),
    Opt("max_batch_rows", _int(0, 1 << 30), 0, "largest batch (first dimension) accepted per request (0 = no limit)"),
    Opt("feedback_capacity", _int(0, 1 << 24), 16384,
        "answered rows per worker kept for ground-truth feedback (0 = feedback off)"),
    Opt("feedback_ttl_s", _float(0.01, 366 * 86400), 3600.0, "seconds an answer accepts feedback"),
    Opt("feedback_task", _task, "auto", "how feedback is scored: auto, classification or regression"),
    Opt("slo_p99_ms", _optional(_float(0.001, 3_600_000)), None,
        "latency objective in ms (99th percentile), exported as modelops_model_slo_p99_seconds (unset = none)"),
]
BY_KEY = {o.key: o for o in OPTIONS}
MANIFEST_KEYS = [o.key for o in OPTIONS if o.in_manifest]


class ConfigError(ValueError):
    pass


def convert(key: str, value: Any, where: str) -> Any:
    opt = BY_KEY[key]
    try:
        return opt.conv(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {key}: {exc}") from None


def normalise_runtime(raw: dict | None, where: str = "options.json runtime") -> dict:
    """Validate the runtime section of options.json; returns a complete dict (defaults filled)."""
    raw = dict(raw or {})
    out = {}
    for key in MANIFEST_KEYS:
        if key in raw:
            out[key] = convert(key, raw.pop(key), where)
        else:
            out[key] = BY_KEY[key].default
    if raw:
        raise ConfigError(f"{where}: unknown runtime option(s) {sorted(raw)}; known: {MANIFEST_KEYS}")
    return out


def resolve(cli: dict, manifest_runtime: dict | None, environ: dict | None = None) -> dict:
    """Merge CLI values (None = not given), env vars, manifest runtime section and defaults."""
    environ = os.environ if environ is None else environ
    manifest_runtime = manifest_runtime or {}
    out = {}
    for opt in OPTIONS:
        if cli.get(opt.key) is not None:
            out[opt.key] = convert(opt.key, cli[opt.key], f"flag {opt.flag}")
        elif opt.env in environ and environ[opt.env] != "":
            out[opt.key] = convert(opt.key, environ[opt.env], f"env {opt.env}")
        elif opt.in_manifest and opt.key in manifest_runtime:
            out[opt.key] = convert(opt.key, manifest_runtime[opt.key], "manifest runtime")
        else:
            out[opt.key] = opt.default
    return out
