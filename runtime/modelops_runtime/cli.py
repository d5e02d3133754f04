"""Command line: ``python3 -m modelops_runtime {prepare,serve,verify}``."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__, config


def _prepare(args) -> int:
    from .jsonlog import Logger
    from .prepare import PrepareError, prepare, read_options

    log = Logger(stream=sys.stderr)
    try:
        opts = read_options(args.options)
        manifest = prepare(args.source, opts, args.out, log=lambda m: log.info("prepare", msg=m))
    except PrepareError as exc:
        log.error("prepare_failed", error=str(exc))
        print(f"prepare failed: {exc}", file=sys.stderr)
        return 2
    log.info(
        "prepared",
        name=manifest["name"],
        version=manifest["version"],
        framework=manifest["framework"],
        original_framework=manifest["original_framework"],
        conversion=manifest["conversion"],
        out=str(args.out),
    )
    return 0


def _verify(args) -> int:
    from . import manifest as mf

    try:
        m = mf.load(args.model_dir)
        mf.verify_files(args.model_dir, m)
    except mf.ManifestError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 3
    print(json.dumps({"ok": True, "name": m["name"], "version": m["version"], "files": len(m["files"])}))
    return 0


def _health(args) -> int:
    """Exit 0 when the server answers 200 (for Docker HEALTHCHECK in images without curl)."""
    import os
    import urllib.error
    import urllib.request

    port = args.port or os.environ.get("MODELOPS_PORT") or "8080"
    path = "/v2/health/live" if args.live else "/v2/health/ready"
    url = f"http://{args.host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            body = resp.read().decode("utf-8", "replace")
            ok = resp.status == 200
    except urllib.error.HTTPError as exc:
        body, ok = exc.read().decode("utf-8", "replace"), False
    except OSError as exc:
        body, ok = str(exc), False
    print(body)
    return 0 if ok else 1


def _requirements(args) -> int:
    from .deps import requirement_files, requirement_lines

    if args.files:
        print("\n".join(str(p) for p in requirement_files(args.framework, args.stage)))
    else:
        print("\n".join(requirement_lines(args.framework, args.stage)))
    return 0


def _serve(args) -> int:
    from .supervisor import run

    cli = {o.key: getattr(args, o.key) for o in config.OPTIONS}
    return run(args.model_dir, cli)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m modelops_runtime", description=__doc__)
    p.add_argument("--version", action="version", version=f"modelops_runtime {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    pp = sub.add_parser("prepare", help="verify and package a model into a model directory (build time)")
    pp.add_argument("--source", required=True, help="directory holding the model files")
    pp.add_argument("--options", required=True, help="options.json path")
    pp.add_argument("--out", required=True, help="output model directory (e.g. /model)")
    pp.set_defaults(func=_prepare)

    ps = sub.add_parser("serve", help="serve a prepared model directory")
    ps.add_argument("--model-dir", default="/model", help="directory written by prepare (default /model)")
    for opt in config.OPTIONS:
        kw = {"dest": opt.key, "default": None, "help": f"{opt.help} (env {opt.env}, default {opt.default!r})"}
        if opt.conv is config._bool:
            kw["nargs"] = "?"
            kw["const"] = "true"
        ps.add_argument(opt.flag, **kw)
    ps.set_defaults(func=_serve)

    ph = sub.add_parser("health", help="probe a running server (exit 0 if ready, or live with --live)")
    ph.add_argument("--host", default="127.0.0.1")
    ph.add_argument("--port", default=None, help="default: $MODELOPS_PORT or 8080")
    ph.add_argument("--live", action="store_true", help="check liveness instead of readiness")
    ph.add_argument("--timeout", type=float, default=3.0)
    ph.set_defaults(func=_health)

    pr = sub.add_parser("requirements", help="print the pinned requirements a model image needs")
    pr.add_argument("--framework", required=True, choices=["sklearn", "onnx", "keras", "tensorflow", "torchscript"])
    pr.add_argument("--stage", default="serve", choices=["serve", "build"], help="build = also what prepare needs")
    pr.add_argument("--files", action="store_true", help="print the requirement file paths instead of their lines")
    pr.set_defaults(func=_requirements)

    pv = sub.add_parser("verify", help="check the model directory's checksums against its manifest")
    pv.add_argument("--model-dir", default="/model")
    pv.set_defaults(func=_verify)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except config.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
