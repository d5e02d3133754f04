"""The HTTP/1.1 server of one worker: an asyncio Protocol driven by httptools.

Requests are handled synchronously inside the event loop callback that
completes them: for the small tabular models this runtime targets, model
latency is tens of microseconds, and handing work to a thread would cost more
than it saves. Keep-alive, pipelining (responses are written in request
order), chunked request bodies, ``Expect: 100-continue``, ``Connection:
close`` and HTTP/1.0 are handled; limits give 413/431/408 instead of growing
memory.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from urllib.parse import unquote

import httptools
import numpy as np
import orjson

from . import __version__
from . import metrics as mx
from .cache import PredictionCache
from .drift import DriftLayout, DriftWindow
from .protocol import Decoder, RequestError, encode_infer, encode_predictions, header_length

JSON = b"application/json"
TEXT_METRICS = b"text/plain; version=0.0.4; charset=utf-8"

REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
    417: "Expectation Failed", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}
STATUS_LINE = {code: f"HTTP/1.1 {code} {text}\r\n".encode() for code, text in REASONS.items()}

E = mx.ENDPOINT_INDEX
EP_INFER, EP_PREDICT, EP_META, EP_MREADY = E["infer"], E["predict"], E["model_metadata"], E["model_ready"]
EP_SMETA, EP_LIVE, EP_READY, EP_METRICS, EP_OTHER = (
    E["server_metadata"], E["health_live"], E["health_ready"], E["metrics"], E["other"],
)

_KEEP = {b"x-request-id", b"expect", b"inference-header-content-length", b"content-encoding", b"content-length"}


def error_body(msg: str) -> bytes:
    return orjson.dumps({"error": msg})


def _header_safe(value: str) -> bytes:
    return "".join(c if 0x20 < ord(c) < 0x7F else "_" for c in value).encode("ascii")


def _valid_request_id(v: bytes) -> bool:
    return 0 < len(v) <= 128 and all(0x20 < c < 0x7F for c in v)


class App:
    """Routing and request handling, shared by all connections of one worker."""

    def __init__(self, manifest: dict, opts: dict, metrics: mx.WorkerMetrics, log, worker: int = 0):
        self.manifest = manifest
        self.opts = opts
        self.metrics = metrics
        self.own = metrics.own
        self.lay = metrics.lay
        self.log = log
        self.worker = worker
        self.name = manifest["name"]
        self.version = str(manifest["version"])
        self.state = "loading"
        self.reason = "model is loading"
        self.model = None
        self.decoder: Decoder | None = None
        self.cache = PredictionCache(opts["cache_size"])
        self.drift_layout = DriftLayout(manifest.get("reference"))
        self.drift: DriftWindow | None = None
        self.connections: set[HttpConnection] = set()
        self.servers: list = []
        self.draining = False
        self.max_body = opts["max_body_bytes"]
        self.max_head = opts["max_header_bytes"]
        self.access_sample = opts["access_log_sample"]
        self.rid_prefix = f"{random.getrandbits(40):010x}-{worker}-"
        self.rid_counter = 0
        self.common = (
            b"Server: modelops-runtime\r\nX-Model-Name: " + _header_safe(self.name)
            + b"\r\nX-Model-Version: " + _header_safe(self.version) + b"\r\n"
        )
        self._update_date()
        self.info_labels = {
            "name": self.name,
            "version": self.version,
            "framework": manifest["framework"],
            "original_framework": manifest.get("original_framework", manifest["framework"]),
            "runtime_version": __version__,
        }
        self.server_meta = orjson.dumps(
            {"name": "modelops-runtime", "version": __version__, "extensions": ["binary_tensor_data"]}
        )
        self.model_meta = orjson.dumps(
            {
                "name": self.name,
                "versions": [self.version],
                "platform": manifest.get("platform", manifest["framework"]),
                "inputs": [{k: t[k] for k in ("name", "datatype", "shape")} for t in manifest["inputs"]],
                "outputs": [{k: t[k] for k in ("name", "datatype", "shape")} for t in manifest["outputs"]],
            }
        )
        base = f"/v2/models/{self.name}"
        vbase = f"{base}/versions/{self.version}"
        get = ("GET", "HEAD")
        self.routes = {
            "/v2/health/live": (EP_LIVE, get, self.h_live),
            "/v2/health/ready": (EP_READY, get, self.h_ready),
            "/v2": (EP_SMETA, get, self.h_server_meta),
            "/v2/": (EP_SMETA, get, self.h_server_meta),
            "/metrics": (EP_METRICS, get, self.h_metrics),
            "/predict": (EP_PREDICT, ("POST",), self.h_predict),
        }
        for b in (base, vbase):
            self.routes[b] = (EP_META, get, self.h_model_meta)
            self.routes[b + "/ready"] = (EP_MREADY, get, self.h_model_ready)
            self.routes[b + "/infer"] = (EP_INFER, ("POST",), self.h_infer)
        self.bytes_routes = {k.encode(): v for k, v in self.routes.items()}
        # Heavy frameworks predict in a helper thread so the loop keeps answering health
        # checks and metrics meanwhile; tabular models stay inline (a thread hop costs more).
        self.offload = manifest["framework"] in ("keras", "tensorflow", "torchscript")
        self.executor = None
        self.offload_paths = {k for k, v in self.bytes_routes.items() if v[0] in (EP_INFER, EP_PREDICT)}

    # ------------------------------------------------------------------ lifecycle
    def set_ready(self, model, load_seconds: float) -> None:
        self.model = model
        self.decoder = Decoder(model, self.opts["allow_non_finite"], self.opts["max_batch_rows"])
        self.primary = model.output_names[0]
        spec = model.inputs[0]
        lay = self.drift_layout
        if (
            lay.n_features
            and len(model.inputs) == 1
            and len(spec.shape) == 2
            and spec.shape[1] in (-1, lay.n_features)
            and self.opts["drift_window"] > 0
        ):
            self.drift = DriftWindow(lay, self.opts["drift_window"], self.metrics.drift_counts, self.metrics.set_drift_rows)
        self.own[self.lay.load_seconds] = load_seconds
        self.own[self.lay.ready] = 1.0
        self.state = "ready"
        self.reason = ""

    def set_failed(self, reason: str) -> None:
        self.state = "failed"
        self.reason = reason
        self.own[self.lay.ready] = 0.0

    def _update_date(self) -> None:
        self.date = b"Date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()).encode() + b"\r\n"

    def tick(self) -> None:
        """Once a second: Date header, timeouts, drift flush."""
        self._update_date()
        now = time.monotonic()
        rt, kt = self.opts["request_timeout"], self.opts["keepalive_timeout"]
        for conn in list(self.connections):
            if conn.closing or conn.busy:
                continue
            if conn.in_request:
                if now - conn.req_start > rt:
                    conn.reject(408, f"request not received within {rt:g} s")
            elif now - conn.last_active > kt:
                conn.close()
        if self.drift is not None:
            self.drift.flush()

    def begin_drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        for srv in self.servers:
            srv.close()
        busy = 0
        for conn in list(self.connections):
            if conn.in_request or conn.busy or conn.queue:
                busy += 1
            else:
                conn.close()
        self.log.info("drain_started", worker=self.worker, in_flight_connections=busy)

    def new_request_id(self) -> bytes:
        self.rid_counter += 1
        return f"{self.rid_prefix}{self.rid_counter:x}".encode()

    # ------------------------------------------------------------------ dispatch
    def dispatch(self, conn: "HttpConnection", method: str, url: bytes, body: bytes):
        q = url.find(b"?")
        path = url[:q] if q >= 0 else url
        route = self.bytes_routes.get(path)
        if route is None:
            try:
                spath = unquote(path.decode("utf-8", "strict"), errors="strict")
            except UnicodeDecodeError:
                return EP_OTHER, 400, error_body("request path is not valid UTF-8"), JSON, b""
            if len(spath) > 1 and spath.endswith("/"):
                spath = spath[:-1]
            route = self.routes.get(spath)
            if route is None:
                status, msg = self.not_found(spath)
                return EP_OTHER, status, error_body(msg), JSON, b""
        ep, methods, handler = route
        if method not in methods:
            allow = ", ".join(methods).encode()
            return ep, 405, error_body(f"method {method} not allowed here; use {' or '.join(methods)}"), JSON, b"Allow: " + allow + b"\r\n"
        return (ep,) + handler(conn, body)  # a GET with a body is tolerated; the body is ignored

    def not_found(self, path: str) -> tuple[int, str]:
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[0] == "v2" and parts[1] == "models":
            name = parts[2]
            if name != self.name:
                return 404, f"model '{name}' not found; this server serves '{self.name}'"
            if len(parts) >= 5 and parts[3] == "versions" and parts[4] != self.version:
                return 404, f"model '{self.name}' has no version '{parts[4]}'; served version is '{self.version}'"
        return 404, f"no such endpoint: {path}"

    # ------------------------------------------------------------------ handlers
    # Each returns (status, body, content type, extra header bytes).
    def h_live(self, conn, body):
        return 200, b'{"live":true}', JSON, b""

    def _ready_body(self, extra: dict) -> tuple[int, bytes]:
        if self.state == "ready" and not self.draining:
            if self.metrics.all_listening_ready():
                return 200, orjson.dumps({**extra, "ready": True})
            return 503, orjson.dumps({**extra, "ready": False, "state": "loading",
                                      "reason": "another worker is still loading the model"})
        reason = "server is shutting down" if self.draining else self.reason
        return 503, orjson.dumps({**extra, "ready": False, "state": self.state, "reason": reason})

    def h_ready(self, conn, body):
        status, out = self._ready_body({})
        return status, out, JSON, b""

    def h_model_ready(self, conn, body):
        status, out = self._ready_body({"name": self.name, "version": self.version})
        return status, out, JSON, b""

    def h_server_meta(self, conn, body):
        return 200, self.server_meta, JSON, b""

    def h_model_meta(self, conn, body):
        return 200, self.model_meta, JSON, b""

    def h_metrics(self, conn, body):
        if self.drift is not None:
            self.drift.flush()
        return 200, mx.render(self.metrics.shared, self.info_labels, self.drift_layout), TEXT_METRICS, b""

    def _not_ready(self):
        return 503, error_body(f"model '{self.name}' is not ready: {self.reason}"), JSON, b""

    def _cache_lookup(self, feeds: dict, wanted):
        """(key, hit) for the prediction cache; key is None when caching does not apply."""
        cache = self.cache
        if not cache.size:
            return None, None
        key = cache.key(feeds, wanted)
        if key is None:
            return None, None
        hit = cache.get(key)
        if hit is not None:
            self.own[self.lay.cache_hits] += 1.0
            if self.drift is not None:
                self.drift.add(next(iter(feeds.values())))
        else:
            self.own[self.lay.cache_misses] += 1.0
        return key, hit

    def _remember(self, key, feeds: dict, res):
        """After a real prediction: fill the cache and feed the drift window."""
        if key is not None:
            self.cache.put(key, res)
        if self.drift is not None:
            self.drift.add(next(iter(feeds.values())))
        return res

    def _run(self, feeds: dict, wanted):
        key, hit = self._cache_lookup(feeds, wanted)
        if hit is not None:
            return hit
        t = time.perf_counter()
        try:
            res = self.model.predict(feeds, wanted)
        except Exception as exc:
            self.own[self.lay.inf_errors] += 1.0
            raise RequestError(500, f"inference failed: {type(exc).__name__}: {exc}") from exc
        first = next(iter(feeds.values()))
        self.metrics.inference(time.perf_counter() - t, first.shape[0] if first.ndim else 1)
        return self._remember(key, feeds, res)

    def h_infer(self, conn, body):
        if self.model is None:
            return self._not_ready()
        try:
            req_id, feeds, wanted, binary = self.decoder.decode_infer(body, header_length(conn.header_len))
            res = self._run(feeds, wanted)
            out, json_len = encode_infer(self.name, self.version, req_id, res, wanted or self.model.output_names, binary)
        except RequestError as exc:
            return exc.status, error_body(exc.message), JSON, b""
        if json_len is None:
            return 200, out, JSON, b""
        return 200, out, b"application/octet-stream", b"Inference-Header-Content-Length: %d\r\n" % json_len

    # -------------------------------------------------------------- offloaded variants
    async def _predict_in_thread(self, feeds, wanted):
        import concurrent.futures

        if self.executor is None:
            self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        loop = asyncio.get_running_loop()
        t = time.perf_counter()
        try:
            res = await loop.run_in_executor(self.executor, self.model.predict, feeds, wanted)
        except Exception as exc:
            self.own[self.lay.inf_errors] += 1.0
            raise RequestError(500, f"inference failed: {type(exc).__name__}: {exc}") from exc
        first = next(iter(feeds.values()))
        self.metrics.inference(time.perf_counter() - t, first.shape[0] if first.ndim else 1)
        return res

    async def _run_async(self, feeds, wanted):
        key, hit = self._cache_lookup(feeds, wanted)
        if hit is not None:
            return hit
        res = await self._predict_in_thread(feeds, wanted)
        return self._remember(key, feeds, res)

    async def dispatch_async(self, method: str, url: bytes, body: bytes, header_len):
        """infer / predict with the model call in the helper thread (same answers as dispatch)."""
        q = url.find(b"?")
        ep = self.bytes_routes[url[:q] if q >= 0 else url][0]
        if method != "POST":
            return ep, 405, error_body(f"method {method} not allowed here; use POST"), JSON, b"Allow: POST\r\n"
        if self.model is None:
            return (ep,) + self._not_ready()
        try:
            if ep == EP_INFER:
                req_id, feeds, wanted, binary = self.decoder.decode_infer(body, header_length(header_len))
                res = await self._run_async(feeds, wanted)
                out, json_len = encode_infer(self.name, self.version, req_id, res, wanted or self.model.output_names, binary)
                if json_len is not None:
                    return ep, 200, out, b"application/octet-stream", b"Inference-Header-Content-Length: %d\r\n" % json_len
                return ep, 200, out, JSON, b""
            feeds = self.decoder.decode_instances(body)
            res = await self._run_async(feeds, [self.primary])
            return ep, 200, encode_predictions(np.asarray(res[self.primary])), JSON, b""
        except RequestError as exc:
            return ep, exc.status, error_body(exc.message), JSON, b""

    def h_predict(self, conn, body):
        if self.model is None:
            return self._not_ready()
        try:
            feeds = self.decoder.decode_instances(body)
            res = self._run(feeds, [self.primary])
            out = encode_predictions(np.asarray(res[self.primary]))
        except RequestError as exc:
            return exc.status, error_body(exc.message), JSON, b""
        return 200, out, JSON, b""


class HttpConnection(asyncio.Protocol):
    __slots__ = (
        "app", "transport", "parser", "url", "headers", "body", "body_len", "in_request", "t0",
        "req_start", "last_active", "closing", "head_bytes", "header_len", "paused", "busy", "queue",
    )

    def __init__(self, app: App):
        self.app = app
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict = {}
        self.body: list = []
        self.body_len = 0
        self.in_request = False
        self.t0 = 0.0
        self.req_start = 0.0
        self.last_active = time.monotonic()
        self.closing = False
        self.head_bytes = 0
        self.header_len = None
        self.paused = False
        self.busy = False   # an offloaded request is being computed
        self.queue = None   # complete requests waiting behind it (pipelining), in order

    # ---------------------------------------------------------------- transport events
    def connection_made(self, transport):
        self.transport = transport
        self.app.connections.add(self)
        if self.app.draining:
            self.close()

    def connection_lost(self, exc):
        self.app.connections.discard(self)
        pending = (1 if self.in_request else 0) + (1 if self.busy else 0) + len(self.queue or ())
        self.in_request = False
        self.busy = False
        self.queue = None
        if pending:
            self.app.own[self.app.lay.in_flight] -= float(pending)
        self.closing = True

    def pause_writing(self):
        # The client is not reading its responses: stop reading its requests.
        if not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume_writing(self):
        if self.paused:
            self.paused = False
            if not self.busy:
                self.transport.resume_reading()

    def data_received(self, data: bytes):
        if self.closing:
            return
        self.last_active = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self.closing:
                self.reject(400, "protocol upgrade is not supported")
        except httptools.HttpParserError as exc:
            if not self.closing:
                msg = str(exc) or type(exc).__name__
                status = 505 if "version" in msg.lower() else 400
                self.reject(status, f"malformed HTTP request: {msg}")

    # ---------------------------------------------------------------- parser callbacks
    def on_message_begin(self):
        if self.closing:
            return
        self.in_request = True
        self.t0 = time.perf_counter()
        self.req_start = time.monotonic()
        self.url = b""
        self.headers = {}
        self.body = []
        self.body_len = 0
        self.head_bytes = 0
        self.header_len = None
        self.app.own[self.app.lay.in_flight] += 1.0

    def on_url(self, url: bytes):
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > self.app.max_head and not self.closing:
            self.reject(431, f"request line and headers exceed {self.app.max_head} bytes")

    def on_header(self, name: bytes, value: bytes):
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.app.max_head:
            if not self.closing:
                self.reject(431, f"request line and headers exceed {self.app.max_head} bytes")
            return
        n = name.lower()
        if n in _KEEP:
            self.headers[n] = value

    def on_headers_complete(self):
        if self.closing:
            return
        h = self.headers
        cl = h.get(b"content-length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                n = -1
            if n > self.app.max_body:
                self.reject(413, f"request body of {n} bytes exceeds the limit of {self.app.max_body} bytes")
                return
        self.header_len = h.get(b"inference-header-content-length")
        exp = h.get(b"expect")
        if exp is not None:
            if exp.lower() == b"100-continue":
                if self.parser.get_http_version() == "1.1":
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            else:
                self.reject(417, f"unsupported expectation {exp.decode('latin-1')!r}")

    def on_body(self, chunk: bytes):
        if self.closing:
            return
        self.body_len += len(chunk)
        if self.body_len > self.app.max_body:
            self.reject(413, f"request body exceeds the limit of {self.app.max_body} bytes")
            return
        self.body.append(chunk)

    def on_message_complete(self):
        if self.closing:
            return
        app = self.app
        parser = self.parser
        method = parser.get_method().decode("ascii", "replace")
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        enc = self.headers.get(b"content-encoding")
        keep_alive = parser.should_keep_alive() and not app.draining
        if app.offload and (self.busy or self._offloaded_path()):
            req = (method, self.url, body, self.headers, self.t0, parser.get_http_version(), keep_alive)
            self.in_request = False  # fully received; answered later, in order
            if self.busy:
                if self.queue is None:
                    self.queue = []
                self.queue.append(req)
            else:
                self._start(req)
            return
        try:
            if enc is not None and body:
                body = self._decode_body(enc, body)
            ep, status, out, ctype, extra = app.dispatch(self, method, self.url, body)
        except RequestError as exc:
            ep, status, out, ctype, extra = EP_OTHER, exc.status, error_body(exc.message), JSON, b""
        except Exception as exc:  # a bug must not take the worker down
            app.log.limited("error", "handler_error", error=f"{type(exc).__name__}: {exc}")
            ep, status, out, ctype, extra = EP_OTHER, 500, error_body(f"internal error: {type(exc).__name__}"), JSON, b""
        self.send(ep, status, out, ctype, extra, keep_alive, method == "HEAD")

    def _offloaded_path(self) -> bool:
        q = self.url.find(b"?")
        return (self.url[:q] if q >= 0 else self.url) in self.app.offload_paths

    def _start(self, req) -> None:
        """Answer one snapshotted request: offloaded infer/predict, or inline for anything else."""
        method, url, body, headers, t0, version, keep_alive = req
        q = url.find(b"?")
        if (url[:q] if q >= 0 else url) in self.app.offload_paths:
            self.busy = True
            self.transport.pause_reading()
            asyncio.get_running_loop().create_task(self._offloaded(req))
            return
        app = self.app
        try:
            enc = headers.get(b"content-encoding")
            if enc is not None and body:
                body = self._decode_body(enc, body)
            ep, status, out, ctype, extra = app.dispatch(self, method, url, body)
        except RequestError as exc:
            ep, status, out, ctype, extra = EP_OTHER, exc.status, error_body(exc.message), JSON, b""
        except Exception as exc:  # noqa: BLE001
            app.log.limited("error", "handler_error", error=f"{type(exc).__name__}: {exc}")
            ep, status, out, ctype, extra = EP_OTHER, 500, error_body(f"internal error: {type(exc).__name__}"), JSON, b""
        self.send(ep, status, out, ctype, extra, keep_alive and not app.draining, method == "HEAD", req=req)

    async def _offloaded(self, req) -> None:
        method, url, body, headers, t0, version, keep_alive = req
        app = self.app
        try:
            enc = headers.get(b"content-encoding")
            if enc is not None and body:
                body = self._decode_body(enc, body)
            ep, status, out, ctype, extra = await app.dispatch_async(method, url, body, headers.get(b"inference-header-content-length"))
        except RequestError as exc:
            ep, status, out, ctype, extra = EP_OTHER, exc.status, error_body(exc.message), JSON, b""
        except Exception as exc:  # noqa: BLE001
            app.log.limited("error", "handler_error", error=f"{type(exc).__name__}: {exc}")
            ep, status, out, ctype, extra = EP_OTHER, 500, error_body(f"internal error: {type(exc).__name__}"), JSON, b""
        self.busy = False
        if self.closing:  # the client went away meanwhile (in-flight already accounted for)
            return
        self.send(ep, status, out, ctype, extra, keep_alive and not app.draining, False, req=req)
        # answer whatever was pipelined behind it, in order, until the next offloaded one
        while self.queue and not self.busy and not self.closing:
            self._start(self.queue.pop(0))
        if not self.busy and not self.closing:
            if app.draining and not self.in_request:
                self.close()
            elif not self.paused:
                self.transport.resume_reading()

    def _decode_body(self, enc: bytes, body: bytes) -> bytes:
        e = enc.strip().lower()
        if e in (b"identity", b""):
            return body
        if e in (b"gzip", b"x-gzip"):
            d = zlib.decompressobj(wbits=31)
        elif e == b"deflate":
            d = zlib.decompressobj(wbits=15)
        else:
            raise RequestError(415, f"unsupported Content-Encoding {enc.decode('latin-1')!r}; use gzip, deflate or identity")
        try:
            out = d.decompress(body, self.app.max_body + 1)
        except zlib.error as exc:
            raise RequestError(400, f"body is not valid {e.decode()} data: {exc}") from None
        if len(out) > self.app.max_body or d.unconsumed_tail:
            raise RequestError(413, f"decompressed body exceeds the limit of {self.app.max_body} bytes")
        return out

    # ---------------------------------------------------------------- responses
    def send(self, ep: int, status: int, body: bytes, ctype: bytes, extra: bytes, keep_alive: bool,
             head: bool = False, close_now: bool = True, req=None):
        app = self.app
        if req is None:
            headers, t0, version = self.headers, self.t0, self.parser.get_http_version()
        else:
            headers, t0, version = req[3], req[4], req[5]
        rid = headers.get(b"x-request-id")
        if rid is None or not _valid_request_id(rid):
            rid = app.new_request_id()
        if version == "1.0":
            conn_hdr = b"Connection: keep-alive\r\n" if keep_alive else b"Connection: close\r\n"
        else:
            conn_hdr = b"" if keep_alive else b"Connection: close\r\n"
        # Account (metrics, in-flight, logs) before the bytes leave: a client that reads this
        # answer and scrapes /metrics at once must already see it counted.
        if req is not None:
            app.own[app.lay.in_flight] -= 1.0
        elif self.in_request:
            self.in_request = False
            app.own[app.lay.in_flight] -= 1.0
        elapsed = time.perf_counter() - t0
        app.metrics.request(ep, status, elapsed)
        self.last_active = time.monotonic()
        if status >= 400 and not (status == 503 and ep in (EP_READY, EP_MREADY)):
            # (a not-ready answer to a readiness probe is expected, not an error)
            msg = body[:300].decode("utf-8", "replace") if not head else ""
            app.log.limited(
                "error" if status >= 500 else "warning", "request_error",
                status=status, endpoint=mx.ENDPOINTS[ep], request_id=rid.decode(), detail=msg,
            )
        elif app.access_sample and random.random() < app.access_sample:
            app.log.info(
                "request", status=status, endpoint=mx.ENDPOINTS[ep], request_id=rid.decode(),
                duration_ms=round(elapsed * 1000, 3),
            )
        self.transport.write(
            b"".join(
                (
                    STATUS_LINE[status], app.date, app.common,
                    b"Content-Type: ", ctype, b"\r\nContent-Length: ", str(len(body)).encode(),
                    b"\r\nX-Request-ID: ", rid, b"\r\n", extra, conn_hdr, b"\r\n",
                    b"" if head else body,
                )
            )
        )
        if not keep_alive and close_now:
            self.closing = True
            self.transport.close()
            if self.queue:  # pipelined requests behind a closing answer are dropped
                app.own[app.lay.in_flight] -= float(len(self.queue))
                self.queue = None

    def reject(self, status: int, message: str):
        """Answer an error that ends the connection (the rest of the request is not read)."""
        if self.busy:
            # An answer for an earlier (offloaded) request is still due: an error now would
            # arrive out of order, so the connection is dropped instead.
            self.closing = True
            self.transport.abort()
            return
        if not self.in_request:
            self.on_message_begin()
        self.send(EP_OTHER, status, error_body(message), JSON, b"", keep_alive=False, close_now=False)
        self.closing = True
        # Lingering close: stop sending, drain what the client is still sending for a moment,
        # so our response is not lost to a TCP reset.
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except (OSError, RuntimeError):
            pass
        asyncio.get_running_loop().call_later(1.0, self.transport.close)

    def close(self):
        if not self.closing:
            self.closing = True
            self.transport.close()
