"""The application of one worker: model state, routes and handlers (no HTTP in here).

``App.handle`` turns a received request into an ``Answer``. Handlers are
written once. The two that run the model (infer, predict) decode the request
and return a ``ModelCall``: the inputs, plus how to encode the prediction.
``App`` then runs that call through the ``Predictor``, either inline (the
small tabular models this runtime targets answer in tens of microseconds, so
handing work to a thread would cost more than it saves) or, for the heavy
frameworks, in a helper thread, so that the event loop keeps answering health
checks and metrics meanwhile; the HTTP layer then gets an awaitable answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Callable, NamedTuple
from urllib.parse import unquote

import numpy as np
import orjson

from . import __version__
from . import metrics as mx
from .cache import PredictionCache
from .drift import DriftLayout, DriftWindow
from .httpserver import JSON, Answer, error_answer, error_body, request_path
from .protocol import Decoder, RequestError, encode_infer, encode_predictions, header_length

TEXT_METRICS = b"text/plain; version=0.0.4; charset=utf-8"
OCTETS = b"application/octet-stream"
OFFLOADED_FRAMEWORKS = ("keras", "tensorflow", "torchscript")

E = mx.ENDPOINT_INDEX
EP_INFER, EP_PREDICT, EP_META, EP_MREADY = E["infer"], E["predict"], E["model_metadata"], E["model_ready"]
EP_SMETA, EP_LIVE, EP_READY, EP_METRICS, EP_OTHER = (
    E["server_metadata"], E["health_live"], E["health_ready"], E["metrics"], E["other"],
)

LIVE = Answer(200, b'{"live":true}')


class ModelCall(NamedTuple):
    """A handler's request to run the model: inputs, wanted outputs, and how to encode the result."""

    feeds: dict
    wanted: list | None
    encode: Callable[[dict], Answer]


def _call_model(model, feeds: dict, wanted):
    """The model step itself: (result, seconds, exception). Safe to run in the helper thread."""
    t = time.perf_counter()
    try:
        res = model.predict(feeds, wanted)
    except Exception as exc:  # noqa: BLE001 - reported as a 500 by Predictor.settle
        return None, 0.0, exc
    return res, time.perf_counter() - t, None


class Predictor:
    """Runs a ModelCall: the prediction cache, the model, its metrics and the drift window.

    ``now`` calls the model inline and ``later`` in the helper thread; both share the
    lookup before and the bookkeeping after, which stay on the event loop's thread."""

    def __init__(self, model, metrics: mx.WorkerMetrics, cache: PredictionCache, drift: DriftWindow | None):
        self.model = model
        self.metrics = metrics
        self.own = metrics.own
        self.lay = metrics.lay
        self.cache = cache
        self.drift = drift
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None

    def lookup(self, call: ModelCall):
        """(key, hit) for the prediction cache; key is None when caching does not apply."""
        cache = self.cache
        if not cache.size:
            return None, None
        key = cache.key(call.feeds, call.wanted)
        if key is None:
            return None, None
        hit = cache.get(key)
        if hit is not None:
            self.own[self.lay.cache_hits] += 1.0
            if self.drift is not None:
                self.drift.add(next(iter(call.feeds.values())))
        else:
            self.own[self.lay.cache_misses] += 1.0
        return key, hit

    def settle(self, key, call: ModelCall, outcome):
        """After the model ran: count it, fill the cache, feed the drift window."""
        res, seconds, exc = outcome
        if exc is not None:
            self.own[self.lay.inf_errors] += 1.0
            raise RequestError(500, f"inference failed: {type(exc).__name__}: {exc}") from exc
        first = next(iter(call.feeds.values()))
        self.metrics.inference(seconds, first.shape[0] if first.ndim else 1)
        if key is not None:
            self.cache.put(key, res)
        if self.drift is not None:
            self.drift.add(first)
        return res

    def now(self, call: ModelCall):
        key, hit = self.lookup(call)
        if hit is not None:
            return hit
        return self.settle(key, call, _call_model(self.model, call.feeds, call.wanted))

    async def later(self, call: ModelCall):
        key, hit = self.lookup(call)
        if hit is not None:
            return hit
        if self.executor is None:
            self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(self.executor, _call_model, self.model, call.feeds, call.wanted)
        return self.settle(key, call, outcome)


class App:
    """Routing and request handling, shared by all connections of one worker."""

    def __init__(self, manifest: dict, opts: dict, metrics: mx.WorkerMetrics, worker: int = 0,
                 offload: bool | None = None):
        self.manifest = manifest
        self.opts = opts
        self.metrics = metrics
        self.own = metrics.own
        self.lay = metrics.lay
        self.worker = worker
        self.name = manifest["name"]
        self.version = str(manifest["version"])
        self.state = "loading"
        self.reason = "model is loading"
        self.draining = False
        self.model = None
        self.primary = None
        self.decoder: Decoder | None = None
        self.predictor: Predictor | None = None
        self.cache = PredictionCache(opts["cache_size"])
        self.drift_layout = DriftLayout(manifest.get("reference"))
        self.drift: DriftWindow | None = None
        # Heavy frameworks predict in a helper thread; tabular models stay inline.
        self.offload = manifest["framework"] in OFFLOADED_FRAMEWORKS if offload is None else offload
        self.info_labels = {
            "name": self.name,
            "version": self.version,
            "framework": manifest["framework"],
            "original_framework": manifest.get("original_framework", manifest["framework"]),
            "runtime_version": __version__,
        }
        self.server_meta = Answer(200, orjson.dumps(
            {"name": "modelops-runtime", "version": __version__, "extensions": ["binary_tensor_data"]}
        ))
        self.model_meta = Answer(200, orjson.dumps(
            {
                "name": self.name,
                "versions": [self.version],
                "platform": manifest.get("platform", manifest["framework"]),
                "inputs": [{k: t[k] for k in ("name", "datatype", "shape")} for t in manifest["inputs"]],
                "outputs": [{k: t[k] for k in ("name", "datatype", "shape")} for t in manifest["outputs"]],
            }
        ))
        self.routes = self._routes()
        self.bytes_routes = {k.encode(): v for k, v in self.routes.items()}

    def _routes(self) -> dict:
        """path -> (endpoint index, allowed methods, handler)."""
        get, post = ("GET", "HEAD"), ("POST",)
        routes = {
            "/v2/health/live": (EP_LIVE, get, self.h_live),
            "/v2/health/ready": (EP_READY, get, self.h_ready),
            "/v2": (EP_SMETA, get, self.h_server_meta),
            "/v2/": (EP_SMETA, get, self.h_server_meta),
            "/metrics": (EP_METRICS, get, self.h_metrics),
            "/predict": (EP_PREDICT, post, self.h_predict),
        }
        base = f"/v2/models/{self.name}"
        for b in (base, f"{base}/versions/{self.version}"):
            routes[b] = (EP_META, get, self.h_model_meta)
            routes[b + "/ready"] = (EP_MREADY, get, self.h_model_ready)
            routes[b + "/infer"] = (EP_INFER, post, self.h_infer)
        return routes

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
        self.predictor = Predictor(model, self.metrics, self.cache, self.drift)
        self.own[self.lay.load_seconds] = load_seconds
        self.own[self.lay.ready] = 1.0
        self.state = "ready"
        self.reason = ""

    def set_failed(self, reason: str) -> None:
        self.state = "failed"
        self.reason = reason
        self.own[self.lay.ready] = 0.0

    def tick(self) -> None:
        """Once a second (from the HTTP layer's timer): flush the drift window."""
        if self.drift is not None:
            self.drift.flush()

    # ------------------------------------------------------------------ routing
    def handle(self, req) -> tuple:
        """(endpoint index, Answer), or (endpoint index, awaitable Answer) for an offloaded model call."""
        route = self.bytes_routes.get(request_path(req.url))
        if route is None:
            route = self._slow_route(request_path(req.url))
            if type(route) is Answer:
                return EP_OTHER, route
        ep, methods, handler = route
        if req.method not in methods:
            allow = b"Allow: " + ", ".join(methods).encode() + b"\r\n"
            return ep, Answer(405, error_body(f"method {req.method} not allowed here; use {' or '.join(methods)}"), JSON, allow)
        try:
            out = handler(req)  # a GET with a body is tolerated; the body is ignored
            if type(out) is ModelCall:
                if self.offload:
                    return ep, self._finish_later(out)
                out = out.encode(self.predictor.now(out))
        except RequestError as exc:
            out = error_answer(exc.status, exc.message)
        return ep, out

    async def _finish_later(self, call: ModelCall) -> Answer:
        try:
            return call.encode(await self.predictor.later(call))
        except RequestError as exc:
            return error_answer(exc.status, exc.message)

    def _slow_route(self, path: bytes):
        """The route for a percent-encoded or slash-terminated path, or the 400/404 Answer."""
        try:
            spath = unquote(path.decode("utf-8", "strict"), errors="strict")
        except UnicodeDecodeError:
            return error_answer(400, "request path is not valid UTF-8")
        if len(spath) > 1 and spath.endswith("/"):
            spath = spath[:-1]
        route = self.routes.get(spath)
        if route is None:
            return error_answer(404, self.not_found(spath))
        return route

    def not_found(self, path: str) -> str:
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[0] == "v2" and parts[1] == "models":
            name = parts[2]
            if name != self.name:
                return f"model '{name}' not found; this server serves '{self.name}'"
            if len(parts) >= 5 and parts[3] == "versions" and parts[4] != self.version:
                return f"model '{self.name}' has no version '{parts[4]}'; served version is '{self.version}'"
        return f"no such endpoint: {path}"

    # ------------------------------------------------------------------ handlers
    # Each takes the Request and returns an Answer, or a ModelCall for the model step.
    def h_live(self, req) -> Answer:
        return LIVE

    def _readiness(self, extra: dict) -> Answer:
        if self.state == "ready" and not self.draining:
            if self.metrics.all_listening_ready():
                return Answer(200, orjson.dumps({**extra, "ready": True}))
            return Answer(503, orjson.dumps({**extra, "ready": False, "state": "loading",
                                             "reason": "another worker is still loading the model"}))
        reason = "server is shutting down" if self.draining else self.reason
        return Answer(503, orjson.dumps({**extra, "ready": False, "state": self.state, "reason": reason}))

    def h_ready(self, req) -> Answer:
        return self._readiness({})

    def h_model_ready(self, req) -> Answer:
        return self._readiness({"name": self.name, "version": self.version})

    def h_server_meta(self, req) -> Answer:
        return self.server_meta

    def h_model_meta(self, req) -> Answer:
        return self.model_meta

    def h_metrics(self, req) -> Answer:
        if self.drift is not None:
            self.drift.flush()
        return Answer(200, mx.render(self.metrics.shared, self.info_labels, self.drift_layout), TEXT_METRICS)

    def _not_ready(self) -> Answer:
        return error_answer(503, f"model '{self.name}' is not ready: {self.reason}")

    def h_infer(self, req):
        if self.model is None:
            return self._not_ready()
        req_id, feeds, wanted, binary = self.decoder.decode_infer(req.body, header_length(req.header_len))
        names = wanted or self.model.output_names

        def encode(res) -> Answer:
            out, json_len = encode_infer(self.name, self.version, req_id, res, names, binary)
            if json_len is None:
                return Answer(200, out)
            return Answer(200, out, OCTETS, b"Inference-Header-Content-Length: %d\r\n" % json_len)

        return ModelCall(feeds, wanted, encode)

    def h_predict(self, req):
        if self.model is None:
            return self._not_ready()
        primary = self.primary
        return ModelCall(self.decoder.decode_instances(req.body), [primary],
                         lambda res: Answer(200, encode_predictions(np.asarray(res[primary]))))
