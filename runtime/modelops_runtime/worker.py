"""One worker process: verify + load the model, serve HTTP, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import warnings

from . import loaders, samples
from . import manifest as mf
from .jsonlog import Logger
from .metrics import SharedMetrics, WorkerMetrics

EXIT_LOAD_FAILED = 3


def _warm_up(model, manifest: dict) -> str:
    """Run the manifest sample (checked against expected), or a synthetic batch of one."""
    sample = manifest.get("sample")
    if sample:
        for _ in range(3):
            samples.check_sample(model, sample)
        return "sample"
    import numpy as np

    from .schema import v2_to_numpy

    feeds = {}
    for spec in model.inputs:
        if spec.datatype == "BYTES":
            return "skipped (BYTES input)"
        shape = [1 if d == -1 else d for d in spec.shape]
        feeds[spec.name] = np.zeros(shape, dtype=v2_to_numpy(spec.datatype))
    for _ in range(3):
        model.predict(feeds, None)
    return "synthetic zeros"


def load_model(model_dir: str, manifest: dict, threads: int):
    t = time.perf_counter()
    model = loaders.load_served(model_dir, manifest, threads=threads)
    how = _warm_up(model, manifest)
    return model, time.perf_counter() - t, how


def _set_parent_death_signal() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_main(index: int, model_dir: str, manifest: dict, opts: dict, shared: SharedMetrics,
                listener: socket.socket, restarted: bool, parent_pid: int) -> int:
    """Serve on the supervisor's listening socket, inherited across the fork (see Worker)."""
    _set_parent_death_signal()
    if os.getppid() != parent_pid:
        return 1
    return Worker(index, model_dir, manifest, opts, shared, listener).run(restarted)


def _new_loop():
    try:
        import uvloop

        return uvloop.new_event_loop(), "uvloop"
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"


def _quiet_numerics(opts: dict) -> None:
    warnings.filterwarnings("ignore", category=UserWarning)
    import numpy as np

    np.seterr(all="ignore")  # overflowing casts become inf and are rejected by the input checks
    try:
        import sklearn

        sklearn.set_config(assume_finite=not opts["allow_non_finite"])
    except ImportError:
        pass


class Worker:
    """One worker's life: load the model, accept connections, drain on SIGTERM, exit.

    The worker accepts connections only once its model is verified, loaded and warmed up,
    or once loading has failed (then every worker's readiness answers 503 with the reason).
    A loading worker takes no connection, so nothing it could only refuse ever reaches it."""

    def __init__(self, index: int, model_dir: str, manifest: dict, opts: dict, shared: SharedMetrics,
                 listener: socket.socket):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        _quiet_numerics(opts)
        from .app import App
        from .httpserver import HttpServer

        self.index = index
        self.model_dir = model_dir
        self.manifest = manifest
        self.opts = opts
        self.listener = listener
        self.log = Logger(level=opts["log_level"], worker=index)
        self.loop, self.loop_name = _new_loop()
        asyncio.set_event_loop(self.loop)
        self.metrics = WorkerMetrics(shared, index)
        self.app = App(manifest, opts, self.metrics, worker=index, journal=getattr(shared, "journal", None))
        self.http = HttpServer(self.app, opts, self.log)
        self.done = self.loop.create_future()
        self.exit_code = 0
        self.drain_deadline = 0.0

    def run(self, restarted: bool) -> int:
        loop = self.loop
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_term)
        # Unblock only once the loop runs: a SIGTERM that arrived during start-up is pending
        # and is delivered at the unblock; uvloop watches for signals only while it runs, so
        # delivered before that, it would be lost and the worker would ignore the drain.
        loop.call_soon(signal.pthread_sigmask, signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            self.log.info("worker_started", worker=self.index, restarted=restarted, loop=self.loop_name)
            loop.call_later(1.0, self.tick)
            loop.create_task(self.load())
            loop.run_until_complete(self.done)
        finally:
            for srv in self.http.servers:
                srv.close()
            try:
                loop.run_until_complete(asyncio.sleep(0))
            except Exception:  # noqa: BLE001
                pass
        return self.exit_code

    def finish(self, code: int) -> None:
        self.exit_code = code
        if not self.done.done():
            self.done.set_result(None)

    async def load(self) -> None:
        app, log = self.app, self.log
        try:
            model, seconds, how = await self.loop.run_in_executor(
                None, load_model, self.model_dir, self.manifest, self.opts["threads"])
        except Exception as exc:  # noqa: BLE001 - any failure must be reported, not crash silently
            reason = load_failure(exc)
        else:
            import gc

            gc.collect()
            gc.freeze()  # everything loaded so far is long-lived: keep it out of GC passes
            app.set_ready(model, seconds)
            log.info("model_ready", name=app.name, version=app.version, framework=self.manifest["framework"],
                     load_seconds=round(seconds, 4), warm_up=how, checksums="verified", loop=self.loop_name)
            await self.start_accepting()
            return
        app.set_failed(reason)
        log.error("model_load_failed", name=app.name, version=app.version, reason=reason)
        if self.opts["exit_on_load_failure"]:
            self.finish(EXIT_LOAD_FAILED)
            return
        await self.start_accepting()  # so the reason is visible on /v2/health/ready

    async def start_accepting(self) -> None:
        if self.app.draining:
            return
        # Flag first: from the moment this worker can take a connection, every worker's
        # readiness counts it (a failed worker turns the whole server's readiness to 503).
        self.metrics.own[self.metrics.lay.listening] = 1.0
        self.listener.setblocking(False)
        srv = await self.loop.create_server(self.http.connection, sock=self.listener, backlog=2048)
        self.http.servers.append(srv)
        if self.app.draining:
            srv.close()

    def on_term(self) -> None:
        if self.app.draining:
            return
        self.http.begin_drain()
        self.metrics.own[self.metrics.lay.listening] = 0.0
        self.drain_deadline = time.monotonic() + self.opts["drain_timeout"]
        self.check_drained()

    def check_drained(self) -> None:
        if not self.http.connections:
            self.log.info("drained", worker=self.index)
            self.finish(0)
        elif time.monotonic() >= self.drain_deadline:
            aborted = self.http.abort_all()
            self.log.warning("drain_timeout", worker=self.index, aborted_connections=aborted)
            self.finish(0)
        else:
            self.loop.call_later(0.05, self.check_drained)

    def tick(self) -> None:
        try:
            self.http.tick()
        finally:
            if not self.done.done():
                self.loop.call_later(1.0, self.tick)


def load_failure(exc: Exception) -> str:
    """Why loading failed, in the words readiness and the log report."""
    if isinstance(exc, mf.ChecksumError):
        return f"checksum verification failed: {exc}"
    if isinstance(exc, loaders.LoadError):
        return f"model load failed: {exc}"
    if isinstance(exc, samples.SampleMismatch):
        return f"warm-up sample check failed: {exc}"
    return f"unexpected error while loading the model: {type(exc).__name__}: {exc}"
