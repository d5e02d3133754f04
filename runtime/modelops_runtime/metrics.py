"""Prometheus metrics kept in shared memory so every worker process sees every count.

The supervisor maps one anonymous shared region (``mmap(-1, ...)``) before it
forks the workers. The region holds one fixed-layout *slot* of float64 values
per worker. A worker only ever writes its own slot (8-byte aligned stores, so
readers never see torn values) and any worker that answers ``/metrics`` sums
all slots. A restarted worker reuses its slot, so counters never go back.
"""

from __future__ import annotations

import math
import mmap
from bisect import bisect_left

ENDPOINTS = (
    "infer", "predict", "model_metadata", "model_ready", "server_metadata",
    "health_live", "health_ready", "metrics", "feedback", "other",
)
FEEDBACK_OUTCOMES = ("matched", "unknown", "expired", "duplicate", "invalid")
FEEDBACK_OUTCOME_INDEX = {o: i for i, o in enumerate(FEEDBACK_OUTCOMES)}
CODES = (200, 400, 404, 405, 408, 409, 411, 413, 415, 417, 431, 500, 501, 503, 505)
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
NB = len(BUCKETS) + 1  # + the +Inf overflow bucket
CODE_INDEX = {c: i for i, c in enumerate(CODES)}
ENDPOINT_INDEX = {e: i for i, e in enumerate(ENDPOINTS)}


class Layout:
    """Offsets (in float64 units) of every value inside one worker slot."""

    def __init__(self, drift_size: int = 0):
        off = 0

        def take(n):
            nonlocal off
            start = off
            off += n
            return start

        ne, nc = len(ENDPOINTS), len(CODES)
        self.requests = take(ne * nc)          # [endpoint][code] counts
        self.req_buckets = take(ne * NB)       # [endpoint][bucket] latency counts
        self.req_sum = take(ne)                # [endpoint] latency sums
        self.inf_buckets = take(NB)
        self.inf_sum = take(1)
        self.in_flight = take(1)
        self.load_seconds = take(1)
        self.ready = take(1)
        self.cache_hits = take(1)
        self.cache_misses = take(1)
        self.inf_errors = take(1)
        self.rows = take(1)
        self.restarts = take(1)                # written by the supervisor
        self.listening = take(1)               # 1 while the worker accepts connections
        self.drift_rows = take(1)
        self.fb_outcomes = take(len(FEEDBACK_OUTCOMES))  # [outcome] feedback requests
        self.fb_rows = take(1)                 # rows labelled (matched feedback)
        self.fb_correct = take(1)              # of those, rows the classifier got right
        self.fb_abs_error = take(1)            # sum of |truth - prediction| (regression)
        self.drift = take(drift_size)
        self.slot = off
        self.drift_size = drift_size


class SharedMetrics:
    def __init__(self, workers: int, layout: Layout, mm: mmap.mmap | None = None):
        self.workers = workers
        self.layout = layout
        self.mm = mm if mm is not None else mmap.mmap(-1, max(workers * layout.slot * 8, 8))

    # -- used by the supervisor (no numpy there) --------------------------------------
    def add_restart(self, worker: int) -> None:
        import struct

        pos = (worker * self.layout.slot + self.layout.restarts) * 8
        (v,) = struct.unpack_from("d", self.mm, pos)
        struct.pack_into("d", self.mm, pos, v + 1.0)

    def reset_worker_gauges(self, worker: int) -> None:
        import struct

        for field in (self.layout.in_flight, self.layout.ready, self.layout.load_seconds, self.layout.listening):
            struct.pack_into("d", self.mm, (worker * self.layout.slot + field) * 8, 0.0)

    # -- used by the workers -------------------------------------------------------
    def arrays(self):
        import numpy as np

        arr = np.frombuffer(self.mm, dtype=np.float64, count=self.workers * self.layout.slot)
        return arr.reshape(self.workers, self.layout.slot)


class WorkerMetrics:
    """The hot-path recorder of one worker (writes only its own slot)."""

    def __init__(self, shared: SharedMetrics, index: int):
        self.shared = shared
        self.index = index
        self.all = shared.arrays()
        self.own = self.all[index]
        lay = shared.layout
        self.lay = lay
        self.own[lay.in_flight] = 0.0
        self.own[lay.ready] = 0.0
        self.own[lay.listening] = 0.0
        self.drift_counts = self.own[lay.drift : lay.drift + lay.drift_size]
        # The window restarts empty after a restart: forget the old counts.
        self.drift_counts[:] = 0.0
        self.own[lay.drift_rows] = 0.0

    def request(self, endpoint: int, code: int, seconds: float) -> None:
        own, lay = self.own, self.lay
        ci = CODE_INDEX.get(code)
        if ci is None:
            ci = CODE_INDEX[500] if code >= 500 else CODE_INDEX[400]
        own[lay.requests + endpoint * len(CODES) + ci] += 1.0
        own[lay.req_buckets + endpoint * NB + bisect_left(BUCKETS, seconds)] += 1.0
        own[lay.req_sum + endpoint] += seconds

    def inference(self, seconds: float, rows: int) -> None:
        own, lay = self.own, self.lay
        own[lay.inf_buckets + bisect_left(BUCKETS, seconds)] += 1.0
        own[lay.inf_sum] += seconds
        own[lay.rows] += rows

    def all_listening_ready(self) -> bool:
        """True when every worker that accepts connections has its model ready.

        Readiness is a property of the instance, not of the worker a probe happens to
        reach: while a sibling is still loading, traffic could land on it."""
        lay = self.lay
        for slot in self.all:
            if slot[lay.listening] and not slot[lay.ready]:
                return False
        return True

    def set_drift_rows(self, n: int) -> None:
        self.own[self.lay.drift_rows] = float(n)


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _le(b: float) -> str:
    return repr(float(b))


def render(shared: SharedMetrics, info: dict, drift_layout=None, drift_psi=None, *,
           feedback: bool = False, slo_p99_ms: float | None = None) -> bytes:
    """Prometheus text exposition format 0.0.4 for the sum of all worker slots."""
    import numpy as np

    slots = shared.arrays()
    tot = slots.sum(axis=0)
    lay = shared.layout
    out: list[str] = []
    add = out.append

    add("# HELP modelops_model_info Model served by this runtime (always 1).")
    add("# TYPE modelops_model_info gauge")
    labels = ",".join(f'{k}="{_esc(v)}"' for k, v in info.items())
    add(f"modelops_model_info{{{labels}}} 1")

    add("# HELP modelops_requests_total HTTP requests handled, by endpoint and status code.")
    add("# TYPE modelops_requests_total counter")
    nc = len(CODES)
    for ei, ep in enumerate(ENDPOINTS):
        for ci, code in enumerate(CODES):
            v = tot[lay.requests + ei * nc + ci]
            if v:
                add(f'modelops_requests_total{{endpoint="{ep}",code="{code}"}} {_fmt(v)}')

    add("# HELP modelops_request_duration_seconds Time from the first byte of a request to its response, by endpoint.")
    add("# TYPE modelops_request_duration_seconds histogram")
    for ei, ep in enumerate(ENDPOINTS):
        counts = tot[lay.req_buckets + ei * NB : lay.req_buckets + (ei + 1) * NB]
        total = counts.sum()
        if not total:
            continue
        cum = np.cumsum(counts)
        for b, c in zip(BUCKETS, cum[:-1]):
            add(f'modelops_request_duration_seconds_bucket{{endpoint="{ep}",le="{_le(b)}"}} {_fmt(c)}')
        add(f'modelops_request_duration_seconds_bucket{{endpoint="{ep}",le="+Inf"}} {_fmt(total)}')
        add(f'modelops_request_duration_seconds_sum{{endpoint="{ep}"}} {_fmt(tot[lay.req_sum + ei])}')
        add(f'modelops_request_duration_seconds_count{{endpoint="{ep}"}} {_fmt(total)}')

    add("# HELP modelops_requests_in_flight Requests received but not yet answered, all workers.")
    add("# TYPE modelops_requests_in_flight gauge")
    add(f"modelops_requests_in_flight {_fmt(max(tot[lay.in_flight], 0.0))}")

    add("# HELP modelops_inference_duration_seconds Time spent in the model's predict call.")
    add("# TYPE modelops_inference_duration_seconds histogram")
    counts = tot[lay.inf_buckets : lay.inf_buckets + NB]
    cum = np.cumsum(counts)
    for b, c in zip(BUCKETS, cum[:-1]):
        add(f'modelops_inference_duration_seconds_bucket{{le="{_le(b)}"}} {_fmt(c)}')
    add(f'modelops_inference_duration_seconds_bucket{{le="+Inf"}} {_fmt(cum[-1])}')
    add(f"modelops_inference_duration_seconds_sum {_fmt(tot[lay.inf_sum])}")
    add(f"modelops_inference_duration_seconds_count {_fmt(cum[-1])}")

    add("# HELP modelops_inference_rows_total Input rows (batch entries) predicted.")
    add("# TYPE modelops_inference_rows_total counter")
    add(f"modelops_inference_rows_total {_fmt(tot[lay.rows])}")

    add("# HELP modelops_inference_errors_total Predict calls that raised an error.")
    add("# TYPE modelops_inference_errors_total counter")
    add(f"modelops_inference_errors_total {_fmt(tot[lay.inf_errors])}")

    add("# HELP modelops_prediction_cache_hits_total Predictions answered from the LRU cache.")
    add("# TYPE modelops_prediction_cache_hits_total counter")
    add(f"modelops_prediction_cache_hits_total {_fmt(tot[lay.cache_hits])}")
    add("# HELP modelops_prediction_cache_misses_total Cache look-ups that had to run the model.")
    add("# TYPE modelops_prediction_cache_misses_total counter")
    add(f"modelops_prediction_cache_misses_total {_fmt(tot[lay.cache_misses])}")

    add("# HELP modelops_model_load_duration_seconds Seconds the worker took to verify, load and warm up the model.")
    add("# TYPE modelops_model_load_duration_seconds gauge")
    for w in range(shared.workers):
        add(f'modelops_model_load_duration_seconds{{worker="{w}"}} {_fmt(slots[w, lay.load_seconds])}')
    add("# HELP modelops_worker_ready 1 when the worker has a verified, loaded and warmed-up model.")
    add("# TYPE modelops_worker_ready gauge")
    for w in range(shared.workers):
        add(f'modelops_worker_ready{{worker="{w}"}} {_fmt(slots[w, lay.ready])}')
    add("# HELP modelops_worker_restarts_total Worker processes restarted by the supervisor after a crash.")
    add("# TYPE modelops_worker_restarts_total counter")
    add(f"modelops_worker_restarts_total {_fmt(tot[lay.restarts])}")

    if slo_p99_ms is not None:
        add("# HELP modelops_model_slo_p99_seconds The latency objective: 99% of inference requests within this time.")
        add("# TYPE modelops_model_slo_p99_seconds gauge")
        add(f"modelops_model_slo_p99_seconds {_fmt(slo_p99_ms / 1000.0)}")

    if feedback:
        add("# HELP modelops_feedback_requests_total Ground-truth feedback requests, by outcome.")
        add("# TYPE modelops_feedback_requests_total counter")
        for oi, outcome in enumerate(FEEDBACK_OUTCOMES):
            add(f'modelops_feedback_requests_total{{outcome="{outcome}"}} {_fmt(tot[lay.fb_outcomes + oi])}')
        add("# HELP modelops_feedback_rows_total Answered rows that received a ground-truth label.")
        add("# TYPE modelops_feedback_rows_total counter")
        add(f"modelops_feedback_rows_total {_fmt(tot[lay.fb_rows])}")
        add("# HELP modelops_feedback_correct_rows_total Labelled rows the model classified correctly (classification).")
        add("# TYPE modelops_feedback_correct_rows_total counter")
        add(f"modelops_feedback_correct_rows_total {_fmt(tot[lay.fb_correct])}")
        add("# HELP modelops_feedback_abs_error_sum Sum of absolute errors of labelled rows (regression).")
        add("# TYPE modelops_feedback_abs_error_sum counter")
        add(f"modelops_feedback_abs_error_sum {_fmt(tot[lay.fb_abs_error])}")

    if drift_layout is not None and drift_layout.n_features:
        add("# HELP modelops_drift_window_rows Input rows currently in the drift windows of all workers.")
        add("# TYPE modelops_drift_window_rows gauge")
        add(f"modelops_drift_window_rows {_fmt(tot[lay.drift_rows])}")
        add("# HELP modelops_feature_drift_psi Population stability index of recent inputs vs the reference data, per feature.")
        add("# TYPE modelops_feature_drift_psi gauge")
        counts = tot[lay.drift : lay.drift + lay.drift_size]
        if counts.sum() > 0:
            for name, value in drift_layout.psi_values(counts):
                add(f'modelops_feature_drift_psi{{feature="{_esc(name)}"}} {_fmt(value)}')
    return ("\n".join(out) + "\n").encode()
