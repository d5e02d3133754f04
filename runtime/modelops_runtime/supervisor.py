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
from .feedback import SharedJournal
from .metrics import Layout, SharedMetrics

EXIT_CONFIG = 2
EXIT_LOAD_FAILED = 3


def drift_size(reference: dict | None) -> int:
    if not reference:
        return 0
    return sum(len(f.get("edges", [])) + 1 for f in reference.get("features", []))


STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def _spawn(index, model_dir, manifest, opts, shared, listener, restarted, log) -> int:
    """Fork one worker. The caller holds STOP_SIGNALS blocked: the child inherits the mask and
    unblocks them once its own handlers are installed, so an early SIGTERM still means "drain"."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
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
    """The ``serve`` command: load the settings, bind, fork the workers, supervise them."""
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
    _set_thread_environment(opts["threads"])
    # One listening socket for the whole server, bound here and inherited by the workers.
    # The supervisor never accepts; a worker accepts only once its model is ready (or has
    # failed, to report why), so a connection never reaches a worker that cannot answer it.
    try:
        listener = listen_socket(opts["host"], opts["port"])
    except OSError as exc:
        log.error("bind_failed", host=opts["host"], port=opts["port"], error=bind_error(opts["host"], opts["port"], exc))
        return EXIT_CONFIG
    log.info(
        "starting", name=manifest["name"], version=str(manifest["version"]), framework=manifest["framework"],
        host=opts["host"], port=listener.getsockname()[1], workers=opts["workers"], runtime_version=__version__,
        uid=os.getuid(), options={k: v for k, v in opts.items() if k not in ("host", "port")},
    )
    return Supervisor(model_dir, manifest, opts, listener, log).run()


def _set_thread_environment(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Read-only root fs: anything a framework wants to cache goes to the writable temp dir.
    import tempfile

    os.environ.setdefault("KERAS_HOME", os.path.join(tempfile.gettempdir(), ".keras"))


class Supervisor:
    """Keeps ``workers`` worker processes alive until SIGTERM, then waits for their drain.

    A worker that dies is restarted after a back-off (0.5 s, doubling up to 30 s, reset
    once a worker lived a minute); one that cannot load its model (exit 3) stops the server."""

    def __init__(self, model_dir: str, manifest: dict, opts: dict, listener: socket.socket, log: Logger):
        self.model_dir = model_dir
        self.manifest = manifest
        self.opts = opts
        self.listener = listener
        self.log = log
        workers = opts["workers"]
        self.shared = SharedMetrics(workers, Layout(drift_size(manifest.get("reference"))))
        # The prediction journal for feedback rides along with the metrics block (mapped before the forks).
        self.shared.journal = SharedJournal(workers, opts["feedback_capacity"])
        self.children: dict[int, int] = {}  # pid -> worker index
        self.started: dict[int, float] = {}  # pid -> start time
        self.backoff = [0.5] * workers
        self.pending_restart: dict[int, float] = {}  # worker index -> time to restart
        self.exit_codes: list[int] = []
        self.shutting_down = False
        self.deadline: float | None = None
        self.signals = 0
        self.fatal: int | None = None

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        for i in range(self.opts["workers"]):
            self.spawn(i, restarted=False)
            if self.shutting_down:
                break
        while self.children or (self.pending_restart and not self.shutting_down):
            if not self.reap_one():
                self.housekeeping(time.monotonic())
                time.sleep(0.05)
        return self.exit_status()

    def spawn(self, index: int, restarted: bool) -> None:
        """Fork worker ``index`` unless a stop began. The stop signals stay blocked here until
        the child is in ``children``: a SIGTERM that arrives meanwhile is handled right after,
        and its drain reaches the new worker too (before, it went to the older ones only)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            if self.shutting_down:
                return
            pid = _spawn(index, self.model_dir, self.manifest, self.opts, self.shared, self.listener, restarted,
                         self.log)
            self.children[pid] = index
            self.started[pid] = time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def on_signal(self, signum, frame) -> None:
        self.signals += 1
        if not self.shutting_down:
            self.shutting_down = True
            self.deadline = time.monotonic() + self.opts["drain_timeout"] + 5.0
            self.log.info("shutdown_requested", signal=signal.Signals(signum).name, workers=len(self.children))
            try:
                self.listener.close()
            except OSError:
                pass
            self.kill_all(signal.SIGTERM)
        elif self.signals >= 3:
            self.kill_all(signal.SIGKILL)

    def kill_all(self, sig) -> None:
        for pid in list(self.children):
            _kill(pid, sig)

    def reap_one(self) -> bool:
        """Handle one exited worker, if any; True when one was handled."""
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if not pid or pid not in self.children:
            return False
        idx = self.children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        lived = time.monotonic() - self.started.pop(pid, time.monotonic())
        if self.shutting_down:
            self.exit_codes.append(code)
            self.log.info("worker_exited", worker=idx, code=code)
        elif code == EXIT_LOAD_FAILED:
            self.log.error("worker_load_failed", worker=idx, code=code)
            self.fatal = EXIT_LOAD_FAILED
            self.on_signal(signal.SIGTERM, None)
        else:
            self.schedule_restart(idx, code, lived)
        return True

    def schedule_restart(self, idx: int, code: int, lived: float) -> None:
        if lived > 60:
            self.backoff[idx] = 0.5
        delay = self.backoff[idx]
        self.backoff[idx] = min(delay * 2, 30.0)
        self.log.error("worker_died", worker=idx, code=code, restart_in_seconds=delay)
        self.shared.reset_worker_gauges(idx)
        self.pending_restart[idx] = time.monotonic() + delay

    def housekeeping(self, now: float) -> None:
        """Restart the workers whose back-off is over; past the drain deadline, kill the rest."""
        if not self.shutting_down:
            for idx, when in list(self.pending_restart.items()):
                if now >= when:
                    del self.pending_restart[idx]
                    self.shared.add_restart(idx)
                    self.spawn(idx, restarted=True)
            return
        self.pending_restart.clear()
        if self.deadline is not None and now > self.deadline:
            self.kill_all(signal.SIGKILL)
            self.deadline = None

    def exit_status(self) -> int:
        if self.fatal is not None:
            self.log.error("exiting", code=self.fatal, reason="model could not be verified/loaded (exit_on_load_failure)")
            return self.fatal
        code = 0 if all(c == 0 for c in self.exit_codes) else 1
        self.log.info("stopped", code=code)
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
