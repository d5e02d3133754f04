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
    """Serve on the supervisor's listening socket, inherited across the fork.

    The worker accepts connections only once its model is verified, loaded and warmed up,
    or once loading has failed (then every worker's readiness answers 503 with the reason).
    A loading worker takes no connection, so nothing it could only refuse ever reaches it."""
    _set_parent_death_signal()
    if os.getppid() != parent_pid:
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    warnings.filterwarnings("ignore", category=UserWarning)
    import numpy as np

    np.seterr(all="ignore")  # overflowing casts become inf and are rejected by the input checks
    log = Logger(level=opts["log_level"], worker=index)
    try:
        import uvloop

        loop = uvloop.new_event_loop()
        loop_name = "uvloop"
    except ImportError:
        loop = asyncio.new_event_loop()
        loop_name = "asyncio"
    asyncio.set_event_loop(loop)

    from .server import App, HttpConnection

    try:
        import sklearn

        sklearn.set_config(assume_finite=not opts["allow_non_finite"])
    except ImportError:
        pass

    metrics = WorkerMetrics(shared, index)
    app = App(manifest, opts, metrics, log, worker=index)
    done = loop.create_future()
    exit_code = [0]

    async def start_accepting():
        # Flag first: from the moment this worker can take a connection, every worker's
        # readiness counts it (a failed worker turns the whole server's readiness to 503).
        metrics.own[metrics.lay.listening] = 1.0
        listener.setblocking(False)
        srv = await loop.create_server(lambda: HttpConnection(app), sock=listener, backlog=2048)
        app.servers.append(srv)
        if app.draining:
            srv.close()

    def finish(code: int):
        exit_code[0] = code
        if not done.done():
            done.set_result(None)

    async def load():
        try:
            model, seconds, how = await loop.run_in_executor(None, load_model, model_dir, manifest, opts["threads"])
        except mf.ChecksumError as exc:
            reason = f"checksum verification failed: {exc}"
        except loaders.LoadError as exc:
            reason = f"model load failed: {exc}"
        except samples.SampleMismatch as exc:
            reason = f"warm-up sample check failed: {exc}"
        except Exception as exc:  # noqa: BLE001 - any failure must be reported, not crash silently
            reason = f"unexpected error while loading the model: {type(exc).__name__}: {exc}"
        else:
            import gc

            gc.collect()
            gc.freeze()  # everything loaded so far is long-lived: keep it out of GC passes
            app.set_ready(model, seconds)
            log.info("model_ready", name=app.name, version=app.version, framework=manifest["framework"],
                     load_seconds=round(seconds, 4), warm_up=how, checksums="verified", loop=loop_name)
            if not app.draining:
                await start_accepting()
            return
        app.set_failed(reason)
        log.error("model_load_failed", name=app.name, version=app.version, reason=reason)
        if opts["exit_on_load_failure"]:
            finish(EXIT_LOAD_FAILED)
            return
        if not app.draining:
            await start_accepting()  # so the reason is visible on /v2/health/ready

    def on_term():
        if app.draining:
            return
        app.begin_drain()
        metrics.own[metrics.lay.listening] = 0.0
        deadline = time.monotonic() + opts["drain_timeout"]

        def check():
            if not app.connections:
                log.info("drained", worker=index)
                finish(0)
            elif time.monotonic() >= deadline:
                n = len(app.connections)
                for c in list(app.connections):
                    c.transport.abort()
                log.warning("drain_timeout", worker=index, aborted_connections=n)
                finish(0)
            else:
                loop.call_later(0.05, check)

        check()

    def tick():
        try:
            app.tick()
        finally:
            if not done.done():
                loop.call_later(1.0, tick)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_term)
    # Unblock only once the loop runs: a SIGTERM that arrived during start-up is pending
    # and is delivered at the unblock; uvloop watches for signals only while it runs, so
    # delivered before that, it would be lost and the worker would ignore the drain.
    loop.call_soon(signal.pthread_sigmask, signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})

    try:
        log.info("worker_started", worker=index, restarted=restarted, loop=loop_name)
        loop.call_later(1.0, tick)
        loop.create_task(load())
        loop.run_until_complete(done)
    finally:
        for srv in app.servers:
            srv.close()
        try:
            loop.run_until_complete(asyncio.sleep(0))
        except Exception:  # noqa: BLE001
            pass
    return exit_code[0]
