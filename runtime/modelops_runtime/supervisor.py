"""The ``serve`` entry process: reads the manifest, forks workers, restarts crashed ones,
forwards SIGTERM for a graceful drain, and reports the exit status.

Only the standard library is imported here, so every worker initialises
numpy/BLAS/onnxruntime thread pools after the fork, on its own.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import time

from . import __version__, config
from . import manifest as mf
from .jsonlog import Logger
from .metrics import Layout, SharedMetrics

EXIT_CONFIG = 2
EXIT_LOAD_FAILED = 3


def drift_size(reference: dict | None) -> int:
    if not reference:
        return 0
    return sum(len(f.get("edges", [])) + 1 for f in reference.get("features", []))


def _spawn(index, model_dir, manifest, opts, shared, listener, restarted, log) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    # Block SIGTERM/SIGINT across the fork: the child unblocks them once its own
    # handlers are installed, so an early SIGTERM still means "drain", not "die".
    sigs = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)
        return pid
    code = 1
    try:
        from .worker import worker_main

        code = worker_main(index, model_dir, manifest, opts, shared, listener, restarted, os.getppid())
    except BaseException as exc:  # noqa: BLE001 - report, then leave the child for sure
        try:
            log.error("worker_crashed", worker=index, error=f"{type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001
            pass
    finally:
        try:
            sys.stdout.flush()
        except Exception:  # noqa: BLE001
            pass
        os._exit(code)
    return 0  # not reached


def run(model_dir: str, cli: dict) -> int:
    env_level = os.environ.get("MODELOPS_LOG_LEVEL", "info").lower()
    log = Logger(level=env_level if env_level in ("debug", "info", "warning", "error") else "info", role="supervisor")
    try:
        manifest = mf.load(model_dir)
    except mf.ManifestError as exc:
        log.error("manifest_invalid", model_dir=str(model_dir), error=str(exc))
        return EXIT_CONFIG
    try:
        opts = config.resolve(cli, manifest.get("runtime"))
    except config.ConfigError as exc:
        log.error("config_invalid", error=str(exc))
        return EXIT_CONFIG
    log = Logger(level=opts["log_level"], role="supervisor")
    threads = str(opts["threads"])
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Read-only root fs: anything a framework wants to cache goes to the writable temp dir.
    import tempfile

    os.environ.setdefault("KERAS_HOME", os.path.join(tempfile.gettempdir(), ".keras"))

    workers = opts["workers"]
    shared = SharedMetrics(workers, Layout(drift_size(manifest.get("reference"))))

    # One listening socket for the whole server, bound here and inherited by the workers.
    # The supervisor never accepts; a worker accepts only once its model is ready (or has
    # failed, to report why), so a connection never reaches a worker that cannot answer it.
    try:
        listener = listen_socket(opts["host"], opts["port"])
    except OSError as exc:
        log.error("bind_failed", host=opts["host"], port=opts["port"], error=bind_error(opts["host"], opts["port"], exc))
        return EXIT_CONFIG
    port = listener.getsockname()[1]
    log.info(
        "starting", name=manifest["name"], version=str(manifest["version"]), framework=manifest["framework"],
        host=opts["host"], port=port, workers=workers, runtime_version=__version__, uid=os.getuid(),
        options={k: v for k, v in opts.items() if k not in ("host", "port")},
    )

    state = {"shutting_down": False, "deadline": None, "signals": 0}
    children: dict[int, int] = {}  # pid -> worker index
    started: dict[int, float] = {}
    backoff = [0.5] * workers
    pending_restart: dict[int, float] = {}  # worker index -> time to restart
    exit_codes: list[int] = []

    def on_signal(signum, frame):
        state["signals"] += 1
        if not state["shutting_down"]:
            state["shutting_down"] = True
            state["deadline"] = time.monotonic() + opts["drain_timeout"] + 5.0
            log.info("shutdown_requested", signal=signal.Signals(signum).name, workers=len(children))
            try:
                listener.close()
            except OSError:
                pass
            for pid in list(children):
                _kill(pid, signal.SIGTERM)
        elif state["signals"] >= 3:
            for pid in list(children):
                _kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    for i in range(workers):
        pid = _spawn(i, model_dir, manifest, opts, shared, listener, False, log)
        children[pid] = i
        started[pid] = time.monotonic()

    fatal = None
    while children or (pending_restart and not state["shutting_down"]):
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pid, status = 0, 0
        if pid and pid in children:
            idx = children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            lived = time.monotonic() - started.pop(pid, time.monotonic())
            if state["shutting_down"]:
                exit_codes.append(code)
                log.info("worker_exited", worker=idx, code=code)
            elif code == EXIT_LOAD_FAILED:
                log.error("worker_load_failed", worker=idx, code=code)
                fatal = EXIT_LOAD_FAILED
                on_signal(signal.SIGTERM, None)
            else:
                if lived > 60:
                    backoff[idx] = 0.5
                delay = backoff[idx]
                backoff[idx] = min(backoff[idx] * 2, 30.0)
                log.error("worker_died", worker=idx, code=code, restart_in_seconds=delay)
                shared.reset_worker_gauges(idx)
                pending_restart[idx] = time.monotonic() + delay
            continue
        now = time.monotonic()
        if not state["shutting_down"]:
            for idx, when in list(pending_restart.items()):
                if now >= when:
                    del pending_restart[idx]
                    shared.add_restart(idx)
                    npid = _spawn(idx, model_dir, manifest, opts, shared, listener, True, log)
                    children[npid] = idx
                    started[npid] = now
        else:
            pending_restart.clear()
            if state["deadline"] is not None and now > state["deadline"]:
                for cpid in list(children):
                    _kill(cpid, signal.SIGKILL)
                state["deadline"] = None
        time.sleep(0.05)

    if fatal is not None:
        log.error("exiting", code=fatal, reason="model could not be verified/loaded (exit_on_load_failure)")
        return fatal
    code = 0 if all(c == 0 for c in exit_codes) else 1
    log.info("stopped", code=code)
    return code


def listen_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The server's listening socket. No SO_REUSEPORT: a port belongs to one server, and a
    second process asking for it fails instead of silently taking part of its traffic."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebinding past TIME_WAIT only
        s.bind((host, port))
        s.listen(backlog)
    except OSError:
        s.close()
        raise
    return s


def bind_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use by another process; stop it or choose another --port"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on {host}:{port} (ports below 1024 need privileges): {exc.strerror}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"address {host} is not an address of this machine: {exc.strerror}"
    return f"cannot listen on {host}:{port}: {exc}"


def _kill(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
