"""The HTTP/1.1 layer of one worker: an asyncio Protocol driven by httptools.

This module knows HTTP, not models: it parses requests, enforces the limits
(413/431/408 instead of growing memory), decodes compressed bodies, keeps
answers in request order and writes them. What to answer is the
application's business (``app.App.handle``): it returns an answer at once, or
an awaitable of one when the model runs in a helper thread. An answer is a plain
tuple (status, body, content type, extra header lines ending in CRLF): cheap to
build on the hot path.

Keep-alive, pipelining (responses are written in request order), chunked
request bodies, ``Expect: 100-continue``, ``Connection: close`` and HTTP/1.0
are handled here.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib

import httptools
import orjson

from . import metrics as mx
from .protocol import RequestError

JSON = b"application/json"

REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 409: "Conflict", 411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
    417: "Expectation Failed", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}
STATUS_LINE = {code: f"HTTP/1.1 {code} {text}\r\n".encode() for code, text in REASONS.items()}

EP_OTHER = mx.ENDPOINT_INDEX["other"]
# A not-ready answer to a readiness probe is expected, not an error worth a log line.
_PROBES = (mx.ENDPOINT_INDEX["health_ready"], mx.ENDPOINT_INDEX["model_ready"])

# The request headers anything downstream reads; the others are not kept.
_KEEP = {b"x-request-id", b"expect", b"inference-header-content-length", b"content-encoding", b"content-length"}


def error_body(msg: str) -> bytes:
    return orjson.dumps({"error": msg})


def error_answer(status: int, msg: str) -> tuple:
    return status, error_body(msg), JSON, b""


def header_safe(value: str) -> bytes:
    return "".join(c if 0x20 < ord(c) < 0x7F else "_" for c in value).encode("ascii")


def _valid_request_id(v: bytes) -> bool:
    return 0 < len(v) <= 128 and all(0x20 < c < 0x7F for c in v)


def request_path(url: bytes) -> bytes:
    """The URL without its query string."""
    q = url.find(b"?")
    return url[:q] if q >= 0 else url


def _log_path(url: bytes) -> str:
    return request_path(url)[:256].decode("utf-8", "replace")


def decode_body(enc: bytes, body: bytes, limit: int) -> bytes:
    """The body under its Content-Encoding (identity, gzip, deflate), at most ``limit`` bytes."""
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
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise RequestError(400, f"body is not valid {e.decode()} data: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise RequestError(413, f"decompressed body exceeds the limit of {limit} bytes")
    return out


class Request:
    """One fully received request, kept until it is answered (pipelined ones wait in order)."""

    __slots__ = ("method", "url", "body", "headers", "t0", "version", "keep_alive")

    def __init__(self, method: str, url: bytes, body: bytes, headers: dict, t0: float, version: str, keep_alive: bool):
        self.method = method
        self.url = url
        self.body = body
        self.headers = headers
        self.t0 = t0
        self.version = version
        self.keep_alive = keep_alive

    @property
    def header_len(self) -> bytes | None:
        """The raw Inference-Header-Content-Length header (binary tensor extension)."""
        return self.headers.get(b"inference-header-content-length")


class HttpServer:
    """The connections of one worker and what they share: limits, headers, timers, drain."""

    def __init__(self, app, opts: dict, log):
        self.app = app
        app.new_request_id = self.new_request_id
        self.metrics = app.metrics
        self.own = app.metrics.own
        self.lay = app.metrics.lay
        self.log = log
        self.connections: set[HttpConnection] = set()
        self.servers: list = []
        self.max_body = opts["max_body_bytes"]
        self.max_head = opts["max_header_bytes"]
        self.request_timeout = opts["request_timeout"]
        self.keepalive_timeout = opts["keepalive_timeout"]
        self.access_sample = opts["access_log_sample"]
        self.rid_prefix = f"{random.getrandbits(40):010x}-{app.worker}-"
        self.rid_counter = 0
        self.common = (
            b"Server: modelops-runtime\r\nX-Model-Name: " + header_safe(app.name)
            + b"\r\nX-Model-Version: " + header_safe(app.version) + b"\r\n"
        )
        self._update_date()

    def connection(self) -> HttpConnection:
        """The protocol factory for ``loop.create_server``."""
        return HttpConnection(self)

    @property
    def draining(self) -> bool:
        return self.app.draining

    def _update_date(self) -> None:
        self.date = b"Date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()).encode() + b"\r\n"

    def tick(self) -> None:
        """Once a second: Date header, timeouts, then the application's own housekeeping."""
        self._update_date()
        now = time.monotonic()
        rt, kt = self.request_timeout, self.keepalive_timeout
        for conn in list(self.connections):
            if conn.closing or conn.busy:
                continue
            if conn.in_request:
                if now - conn.req_start > rt:
                    conn.reject(408, f"request not received within {rt:g} s")
            elif now - conn.last_active > kt:
                conn.close()
        self.app.tick()

    def begin_drain(self) -> None:
        """Stop accepting, close idle connections; busy ones close after their answer."""
        if self.app.draining:
            return
        self.app.draining = True
        for srv in self.servers:
            srv.close()
        busy = 0
        for conn in list(self.connections):
            if conn.in_request or conn.busy or conn.queue:
                busy += 1
            else:
                conn.close()
        self.log.info("drain_started", worker=self.app.worker, in_flight_connections=busy)

    def abort_all(self) -> int:
        n = len(self.connections)
        for conn in list(self.connections):
            conn.transport.abort()
        return n

    def new_request_id(self) -> bytes:
        self.rid_counter += 1
        return f"{self.rid_prefix}{self.rid_counter:x}".encode()

    def internal_error(self, exc: Exception) -> tuple:
        """A bug must not take the worker down: log it, answer 500."""
        self.log.limited("error", "handler_error", error=f"{type(exc).__name__}: {exc}")
        return error_answer(500, f"internal error: {type(exc).__name__}")


class HttpConnection(asyncio.Protocol):
    __slots__ = (
        "server", "app", "transport", "parser", "url", "headers", "body", "body_len", "in_request", "t0",
        "req_start", "last_active", "closing", "head_bytes", "paused", "busy", "queue",
    )

    def __init__(self, server: HttpServer):
        self.server = server
        self.app = server.app
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict = {}
        self.body: list = []
        self.body_len = 0
        self.in_request = False  # a request is being received (it counts as in flight)
        self.t0 = 0.0
        self.req_start = 0.0
        self.last_active = time.monotonic()
        self.closing = False
        self.head_bytes = 0
        self.paused = False
        self.busy = False   # an answer is being computed in the helper thread
        self.queue = None   # complete requests waiting behind it (pipelining), in order

    # ---------------------------------------------------------------- transport events
    def connection_made(self, transport):
        self.transport = transport
        self.server.connections.add(self)
        if self.server.draining:
            self.close()

    def connection_lost(self, exc):
        self.server.connections.discard(self)
        pending = (1 if self.in_request else 0) + (1 if self.busy else 0) + len(self.queue or ())
        self.in_request = False
        self.busy = False
        self.queue = None
        if pending:
            self.server.own[self.server.lay.in_flight] -= float(pending)
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
        self.server.own[self.server.lay.in_flight] += 1.0

    def on_url(self, url: bytes):
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > self.server.max_head and not self.closing:
            self.reject(431, f"request line and headers exceed {self.server.max_head} bytes")

    def on_header(self, name: bytes, value: bytes):
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.server.max_head:
            if not self.closing:
                self.reject(431, f"request line and headers exceed {self.server.max_head} bytes")
            return
        n = name.lower()
        if n in _KEEP:
            self.headers[n] = value

    def on_headers_complete(self):
        if self.closing:
            return
        h = self.headers
        cl = h.get(b"content-length")
        limit = self.server.max_body
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                n = -1
            if n > limit:
                self.reject(413, f"request body of {n} bytes exceeds the limit of {limit} bytes")
                return
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
        if self.body_len > self.server.max_body:
            self.reject(413, f"request body exceeds the limit of {self.server.max_body} bytes")
            return
        self.body.append(chunk)

    def on_message_complete(self):
        if self.closing:
            return
        parser = self.parser
        req = Request(
            parser.get_method().decode("ascii", "replace"), self.url,
            self.body[0] if len(self.body) == 1 else b"".join(self.body),
            self.headers, self.t0, parser.get_http_version(), parser.should_keep_alive(),
        )
        self.in_request = False  # fully received: from now on `req` holds its place in flight
        if self.busy:
            if self.queue is None:
                self.queue = []
            self.queue.append(req)  # answered in order, after the one being computed
        else:
            self._answer(req)

    # ---------------------------------------------------------------- answers
    def _answer(self, req: Request) -> None:
        """The one answer path: decode the body, ask the application, send now or later."""
        server = self.server
        ep = EP_OTHER
        try:
            enc = req.headers.get(b"content-encoding")
            if enc is not None and req.body:
                req.body = decode_body(enc, req.body, server.max_body)
            ep, out = self.app.handle(req)
        except RequestError as exc:
            out = error_answer(exc.status, exc.message)
        except Exception as exc:  # noqa: BLE001
            ep, out = EP_OTHER, server.internal_error(exc)
        if type(out) is tuple:
            self.send(req, ep, out)
            return
        # An awaitable: the model runs in the helper thread. Stop reading meanwhile;
        # requests pipelined behind this one wait in the queue.
        self.busy = True
        self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self._answer_later(req, ep, out))

    async def _answer_later(self, req: Request, ep: int, pending) -> None:
        try:
            out = await pending
        except Exception as exc:  # noqa: BLE001
            ep, out = EP_OTHER, self.server.internal_error(exc)
        self.busy = False
        if self.closing:  # the client went away meanwhile (in-flight already accounted for)
            return
        self.send(req, ep, out)
        # answer whatever was pipelined behind it, in order, until the next offloaded one
        while self.queue and not self.busy and not self.closing:
            self._answer(self.queue.pop(0))
        if not self.busy and not self.closing:
            if self.server.draining and not self.in_request:
                self.close()
            elif not self.paused:
                self.transport.resume_reading()

    def send(self, req: Request, ep: int, answer: tuple, close_now: bool = True) -> None:
        server = self.server
        status, body, ctype, extra = answer
        keep_alive = req.keep_alive and not self.app.draining
        rid = req.headers.get(b"x-request-id")
        if rid is None or not _valid_request_id(rid):
            rid = server.new_request_id()
        if req.version == "1.0":
            conn_hdr = b"Connection: keep-alive\r\n" if keep_alive else b"Connection: close\r\n"
        else:
            conn_hdr = b"" if keep_alive else b"Connection: close\r\n"
        head = req.method == "HEAD"
        # Account (metrics, in-flight, logs) before the bytes leave: a client that reads this
        # answer and scrapes /metrics at once must already see it counted.
        server.own[server.lay.in_flight] -= 1.0
        elapsed = time.perf_counter() - req.t0
        server.metrics.request(ep, status, elapsed)
        self.last_active = time.monotonic()
        if status >= 400 and not (status == 503 and ep in _PROBES):
            msg = body[:300].decode("utf-8", "replace") if not head else ""
            server.log.limited(
                "error" if status >= 500 else "warning", "request_error",
                status=status, endpoint=mx.ENDPOINTS[ep], request_id=rid.decode(), detail=msg,
                method=req.method, path=_log_path(req.url), duration_ns=int(elapsed * 1e9),
            )
        elif server.access_sample and random.random() < server.access_sample:
            server.log.info(
                "request", status=status, endpoint=mx.ENDPOINTS[ep], request_id=rid.decode(),
                method=req.method, path=_log_path(req.url), duration_ns=int(elapsed * 1e9),
            )
        self.transport.write(
            b"".join(
                (
                    STATUS_LINE[status], server.date, server.common,
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
                server.own[server.lay.in_flight] -= float(len(self.queue))
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
        self.in_request = False
        req = Request("", self.url, b"", self.headers, self.t0, self.parser.get_http_version(), False)
        self.send(req, EP_OTHER, error_answer(status, message), close_now=False)
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
