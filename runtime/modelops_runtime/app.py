"""The application of one worker: model state, routes and handlers (no HTTP in here).

``App.handle`` turns a received request into an answer, the tuple (status,
body, content type, extra header lines) of httpserver. Handlers are written
once. The two endpoints that run the model (infer, predict) have a decode and
an encode handler; between them ``App`` runs the model step through the
``Predictor``, either inline (the small tabular models this runtime targets
answer in tens of microseconds, so handing work to a thread would cost more
than it saves) or, for the heavy frameworks, in a helper thread, so that the
event loop keeps answering health checks and metrics meanwhile; the HTTP layer
then gets an awaitable answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from urllib.parse import unquote

import numpy as np
import orjson

from . import __version__
from . import metrics as mx
from .cache import PredictionCache
from .drift import DriftLayout, DriftWindow
from .feedback import KIND_NUMBER, KIND_STRING, MAX_ID_CHARS, Journal, SharedJournal, string_label
from .httpserver import JSON, _valid_request_id, error_answer, error_body, request_path
from .protocol import Decoder, RequestError, bad, encode_infer, encode_predictions, header_length, json_type, loads_object

TEXT_METRICS = b"text/plain; version=0.0.4; charset=utf-8"
OCTETS = b"application/octet-stream"
OFFLOADED_FRAMEWORKS = ("keras", "tensorflow", "torchscript")

E = mx.ENDPOINT_INDEX
EP_INFER, EP_PREDICT, EP_META, EP_MREADY = E["infer"], E["predict"], E["model_metadata"], E["model_ready"]
EP_SMETA, EP_LIVE, EP_READY, EP_METRICS, EP_FEEDBACK, EP_OTHER = (
    E["server_metadata"], E["health_live"], E["health_ready"], E["metrics"], E["feedback"], E["other"],
)
FB = mx.FEEDBACK_OUTCOME_INDEX
CLASS_DATATYPES = ("BOOL", "BYTES", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")

LIVE = (200, b'{"live":true}', JSON, b"")


def _call_model(model, feeds: dict, wanted):
    """The model step itself: (result, seconds, exception). Safe to run in the helper thread."""
    t = time.perf_counter()
    try:
        res = model.predict(feeds, wanted)
    except Exception as exc:  # noqa: BLE001 - reported as a 500 by Predictor.settle
        return None, 0.0, exc
    return res, time.perf_counter() - t, None


class Predictor:
    """Runs the model step: the prediction cache, the model, its metrics and the drift window.

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

    def lookup(self, feeds: dict, wanted):
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

    def settle(self, key, feeds: dict, outcome):
        """After the model ran: count it, fill the cache, feed the drift window."""
        res, seconds, exc = outcome
        if exc is not None:
            self.own[self.lay.inf_errors] += 1.0
            raise RequestError(500, f"inference failed: {type(exc).__name__}: {exc}") from exc
        first = next(iter(feeds.values()))
        self.metrics.inference(seconds, first.shape[0] if first.ndim else 1)
        if key is not None:
            self.cache.put(key, res)
        if self.drift is not None:
            self.drift.add(first)
        return res

    def now(self, feeds: dict, wanted):
        if not self.cache.size:  # the common case, kept short: no cache to look in
            return self.settle(None, feeds, _call_model(self.model, feeds, wanted))
        key, hit = self.lookup(feeds, wanted)
        if hit is not None:
            return hit
        return self.settle(key, feeds, _call_model(self.model, feeds, wanted))

    async def later(self, feeds: dict, wanted):
        key, hit = self.lookup(feeds, wanted)
        if hit is not None:
            return hit
        if self.executor is None:
            self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(self.executor, _call_model, self.model, feeds, wanted)
        return self.settle(key, feeds, outcome)


class App:
    """Routing and request handling, shared by all connections of one worker."""

    def __init__(self, manifest: dict, opts: dict, metrics: mx.WorkerMetrics, worker: int = 0,
                 offload: bool | None = None, journal: SharedJournal | None = None):
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
        self.server_meta = (200, orjson.dumps(
            {"name": "modelops-runtime", "version": __version__, "extensions": ["binary_tensor_data"]}
        ), JSON, b"")
        self.model_meta = (200, orjson.dumps(
            {
                "name": self.name,
                "versions": [self.version],
                "platform": manifest.get("platform", manifest["framework"]),
                "inputs": [{k: t[k] for k in ("name", "datatype", "shape")} for t in manifest["inputs"]],
                "outputs": [{k: t[k] for k in ("name", "datatype", "shape")} for t in manifest["outputs"]],
            }
        ), JSON, b"")
        if journal is None:  # a lone App (tests): a journal of its own
            journal, index = SharedJournal(1, opts["feedback_capacity"]), 0
        else:
            index = worker
        self.journal = Journal(journal, index, opts["feedback_ttl_s"])
        self.task = feedback_task(manifest, opts["feedback_task"])
        self.new_request_id = None  # set by the HTTP layer: makes an id for a request that brought none
        self.routes = self._routes()
        self.bytes_routes = {k.encode(): v for k, v in self.routes.items()}

    def _routes(self) -> dict:
        """path -> (endpoint index, allowed methods, handler, encoder).

        A route without an encoder answers from its handler. A route with one runs the
        model: its handler decodes the request into (feeds, wanted outputs, context) and
        its encoder turns (prediction, context) into the answer."""
        get, post = ("GET", "HEAD"), ("POST",)
        routes = {
            "/v2/health/live": (EP_LIVE, get, self.h_live, None),
            "/v2/health/ready": (EP_READY, get, self.h_ready, None),
            "/v2": (EP_SMETA, get, self.h_server_meta, None),
            "/v2/": (EP_SMETA, get, self.h_server_meta, None),
            "/metrics": (EP_METRICS, get, self.h_metrics, None),
            "/predict": (EP_PREDICT, post, self.decode_predict, self.encode_predict),
        }
        base = f"/v2/models/{self.name}"
        for b in (base, f"{base}/versions/{self.version}"):
            routes[b] = (EP_META, get, self.h_model_meta, None)
            routes[b + "/ready"] = (EP_MREADY, get, self.h_model_ready, None)
            routes[b + "/infer"] = (EP_INFER, post, self.decode_infer, self.encode_infer)
            routes[b + "/feedback"] = (EP_FEEDBACK, post, self.h_feedback, None)
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
        """(endpoint index, answer), or (endpoint index, awaitable answer) when the model runs in the helper thread."""
        path = request_path(req.url)
        route = self.bytes_routes.get(path)
        if route is None:
            route, problem = self._slow_route(path)
            if problem is not None:
                return EP_OTHER, problem
        ep, methods, handler, encode = route
        if req.method not in methods:
            allow = b"Allow: " + ", ".join(methods).encode() + b"\r\n"
            return ep, (405, error_body(f"method {req.method} not allowed here; use {' or '.join(methods)}"), JSON, allow)
        try:
            if encode is None:
                return ep, handler(req)  # a GET with a body is tolerated; the body is ignored
            if self.model is None:
                return ep, self._not_ready()
            feeds, wanted, context = handler(req)
            if self.offload:
                return ep, self._predict_later(req, feeds, wanted, encode, context)
            res = self.predictor.now(feeds, wanted)
            if self.journal.enabled:
                self.remember(req, context, res)
            return ep, encode(res, context)
        except RequestError as exc:
            return ep, error_answer(exc.status, exc.message)

    async def _predict_later(self, req, feeds: dict, wanted, encode, context) -> tuple:
        try:
            res = await self.predictor.later(feeds, wanted)
            if self.journal.enabled:
                self.remember(req, context, res)
            return encode(res, context)
        except RequestError as exc:
            return error_answer(exc.status, exc.message)

    def remember(self, req, context, res) -> None:
        """Journal an answer for feedback, under the V2 body id or else the X-Request-ID header."""
        arr = res.get(self.primary) if isinstance(res, dict) else None
        if arr is None:
            return  # the client asked for other outputs only: nothing to score later
        rid = context[0] if context is not None else None
        if not rid:  # no body id, or an empty one (what some clients send by default)
            raw = req.headers.get(b"x-request-id")
            if raw is None or not _valid_request_id(raw):
                if self.new_request_id is None:
                    return
                raw = self.new_request_id()
                req.headers[b"x-request-id"] = raw  # the answer carries the id it is journaled under
            rid = raw.decode("ascii")
        values, kind = row_values(arr, self.task)
        self.journal.record(rid, values, kind)

    def _slow_route(self, path: bytes):
        """(route, None) for a percent-encoded or slash-terminated path, or (None, the 400/404 answer)."""
        try:
            spath = unquote(path.decode("utf-8", "strict"), errors="strict")
        except UnicodeDecodeError:
            return None, error_answer(400, "request path is not valid UTF-8")
        if len(spath) > 1 and spath.endswith("/"):
            spath = spath[:-1]
        route = self.routes.get(spath)
        if route is None:
            return None, error_answer(404, self.not_found(spath))
        return route, None

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
    # Each takes the Request and returns the answer tuple (status, body, content type, extra headers).
    def h_live(self, req) -> tuple:
        return LIVE

    def _readiness(self, extra: dict) -> tuple:
        if self.state == "ready" and not self.draining:
            if self.metrics.all_listening_ready():
                return 200, orjson.dumps({**extra, "ready": True}), JSON, b""
            return 503, orjson.dumps({**extra, "ready": False, "state": "loading",
                                      "reason": "another worker is still loading the model"}), JSON, b""
        reason = "server is shutting down" if self.draining else self.reason
        return 503, orjson.dumps({**extra, "ready": False, "state": self.state, "reason": reason}), JSON, b""

    def h_ready(self, req) -> tuple:
        return self._readiness({})

    def h_model_ready(self, req) -> tuple:
        return self._readiness({"name": self.name, "version": self.version})

    def h_server_meta(self, req) -> tuple:
        return self.server_meta

    def h_model_meta(self, req) -> tuple:
        return self.model_meta

    def h_metrics(self, req) -> tuple:
        if self.drift is not None:
            self.drift.flush()
        return 200, mx.render(self.metrics.shared, self.info_labels, self.drift_layout,
                              feedback=self.journal.enabled, slo_p99_ms=self.opts["slo_p99_ms"]), TEXT_METRICS, b""

    def h_feedback(self, req) -> tuple:
        """Ground truth for an earlier answer: compare, count, answer 200 or the 4xx naming the problem."""
        if not self.journal.enabled:
            return error_answer(501, "feedback is switched off on this server (feedback_capacity is 0)")
        own, lay = self.own, self.lay
        try:
            status, body = self._feedback(req)
        except RequestError:
            own[lay.fb_outcomes + FB["invalid"]] += 1.0
            raise
        return status, body, JSON, b""

    def _feedback(self, req) -> tuple:
        own, lay = self.own, self.lay
        obj = loads_object(req.body, "feedback body")
        rid = obj.get("id")
        if rid is None:
            raw = req.headers.get(b"x-request-id")
            if raw is None or not _valid_request_id(raw):
                raise bad("feedback needs the request id of the answer: 'id' in the body or the X-Request-ID header")
            rid = raw.decode("ascii")
        elif not isinstance(rid, str) or not rid or len(rid) > MAX_ID_CHARS:
            raise bad(f"'id' must be a non-empty string of at most {MAX_ID_CHARS} characters, not {json_type(rid)}")
        if "truth" not in obj:
            raise bad("'truth' is required: a list with one true value per row of the answer")
        truth = obj["truth"]
        if not isinstance(truth, list):
            if isinstance(truth, (dict, type(None))):
                raise bad(f"'truth' must be a list with one true value per row of the answer, not {json_type(truth)}")
            truth = [truth]
        if not truth:
            raise bad("'truth' must not be empty: one true value per row of the answer")
        limit = self.journal.capacity
        if self.opts["max_batch_rows"]:
            limit = min(limit, self.opts["max_batch_rows"])
        if len(truth) > limit:
            raise RequestError(413, f"'truth' has {len(truth)} values; answers of at most {limit} rows are kept for feedback")
        for i, v in enumerate(truth):
            if type(v) not in (int, float, bool, str):
                raise bad(f"truth[{i}] must be a number, a string or true/false, not {json_type(v)}")
        what, found = self.journal.find(rid)
        if what == "unknown":
            own[lay.fb_outcomes + FB["unknown"]] += 1.0
            return 404, error_body(f"no answer with request id '{rid}' is known to this server")
        if what == "expired":
            own[lay.fb_outcomes + FB["expired"]] += 1.0
            return 404, error_body(f"the answer with request id '{rid}' has expired: {found}")
        identity, _, rows, kind, values = found
        if self.journal.labelled_already(identity):
            own[lay.fb_outcomes + FB["duplicate"]] += 1.0
            return 409, error_body(f"the answer with request id '{rid}' has already been labelled; it is counted once")
        if len(truth) != rows:
            raise bad(f"'truth' has {len(truth)} value{'s' if len(truth) != 1 else ''}, "
                      f"the answer to '{rid}' had {rows} row{'s' if rows != 1 else ''}")
        if self.task == "classification":
            correct = 0
            for i, (v, p) in enumerate(zip(truth, values)):
                if kind == KIND_STRING:
                    if type(v) is not str:
                        raise bad(f"truth[{i}] must be a string (the model answers string labels), not {json_type(v)}")
                    correct += string_label(v) == p
                else:
                    if type(v) is str:
                        raise bad(f"truth[{i}] must be a number or true/false (the model answers numeric labels), not a string")
                    correct += float(v) == p
            result = {"id": rid, "rows": rows, "correct": int(correct)}
            own[lay.fb_correct] += correct
        else:
            err = 0.0
            for i, (v, p) in enumerate(zip(truth, values)):
                if type(v) not in (int, float):
                    raise bad(f"truth[{i}] must be a number (the model is a regressor), not {json_type(v)}")
                err += abs(float(v) - p)
            result = {"id": rid, "rows": rows, "abs_error": err}
            own[lay.fb_abs_error] += err
        self.journal.mark_labelled(identity)
        own[lay.fb_rows] += rows
        own[lay.fb_outcomes + FB["matched"]] += 1.0
        return 200, orjson.dumps(result)

    def _not_ready(self) -> tuple:
        return error_answer(503, f"model '{self.name}' is not ready: {self.reason}")

    # The model endpoints: decode -> (feeds, wanted outputs, context); the model runs; encode.
    def decode_infer(self, req):
        req_id, feeds, wanted, binary = self.decoder.decode_infer(req.body, header_length(req.header_len))
        return feeds, wanted, (req_id, wanted or self.model.output_names, binary)

    def encode_infer(self, res, context) -> tuple:
        req_id, names, binary = context
        out, json_len = encode_infer(self.name, self.version, req_id, res, names, binary)
        if json_len is None:
            return 200, out, JSON, b""
        return 200, out, OCTETS, b"Inference-Header-Content-Length: %d\r\n" % json_len

    def decode_predict(self, req):
        return self.decoder.decode_instances(req.body), [self.primary], None

    def encode_predict(self, res, context) -> tuple:
        return 200, encode_predictions(np.asarray(res[self.primary])), JSON, b""


def feedback_task(manifest: dict, option: str) -> str:
    """classification or regression, from the option or else the first output of the model.

    Classification: an integer, boolean or string first output, an output named ``label``
    (what prepare calls a classifier's prediction), or a float output of more than one
    column (class scores: the answer is their argmax). Anything else is a regression."""
    if option != "auto":
        return option
    outputs = manifest.get("outputs") or []
    if not outputs:
        return "regression"
    first = outputs[0]
    shape = first.get("shape") or []
    if first.get("datatype") in CLASS_DATATYPES or first.get("name") == "label":
        return "classification"
    if len(shape) == 2 and (shape[1] > 1):
        return "classification"
    return "regression"


def row_values(arr, task: str):
    """(float64 array with one value per row, kind) for the journal."""
    if not isinstance(arr, np.ndarray):
        arr = np.asarray(arr)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    n = arr.shape[0]
    if arr.dtype.kind in "USO":
        flat = arr.reshape(n, -1)[:, 0] if n else arr
        if arr.dtype.kind == "O" and n and not isinstance(flat[0], (str, bytes)):
            return np.asarray(flat, dtype=np.float64), KIND_NUMBER
        return np.fromiter((string_label(v) for v in flat), dtype=np.float64, count=n), KIND_STRING
    if task == "classification" and arr.dtype.kind == "f" and arr.ndim == 2 and arr.shape[1] > 1:
        return arr.argmax(axis=1).astype(np.float64), KIND_NUMBER
    if arr.ndim == 1:
        return arr, KIND_NUMBER  # stored as float64 by the journal
    return arr.reshape(n, -1)[:, 0].astype(np.float64), KIND_NUMBER
