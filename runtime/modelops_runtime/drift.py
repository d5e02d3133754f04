"""Reference statistics and the population stability index (PSI).

At prepare time each feature of the reference data is cut into (up to)
``bins`` bins at its quantiles; the manifest keeps the interior edges and the
share of reference rows that fell in each bin. At serve time recent inputs
are binned with the same edges and compared with PSI:

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

with ``a`` the live proportions and ``e`` the reference ones (both floored at
``EPS`` so empty bins do not give infinities). Rules of thumb: < 0.1 stable,
0.1-0.25 moderate shift, > 0.25 significant shift.
"""

from __future__ import annotations


import numpy as np

EPS = 1e-4


def bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin i holds edges[i-1] <= x < edges[i]; bin 0 is below the first edge."""
    return np.searchsorted(edges, values, side="right")


def reference_stats(data: np.ndarray, feature_names: list[str] | None = None, bins: int = 10) -> dict:
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 2:
        raise ValueError("reference data must be a 2-D table with at least 2 rows")
    n, f = data.shape
    if feature_names is None:
        feature_names = [f"f{i}" for i in range(f)]
    if len(feature_names) != f:
        raise ValueError(f"{len(feature_names)} feature names for {f} columns")
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    features = []
    for j in range(f):
        col = data[:, j]
        col = col[np.isfinite(col)]
        if col.size == 0:
            edges = np.array([], dtype=np.float64)
        else:
            edges = np.unique(np.quantile(col, qs))
        counts = np.bincount(bin_index(edges, col), minlength=edges.size + 1)
        props = counts / max(col.size, 1)
        features.append(
            {
                "name": str(feature_names[j]),
                "edges": [float(x) for x in edges],
                "proportions": [float(x) for x in props],
                "mean": float(col.mean()) if col.size else None,
                "std": float(col.std()) if col.size else None,
            }
        )
    return {"method": "quantile", "bins": bins, "rows": int(n), "features": features}


def psi(expected: np.ndarray, actual_counts: np.ndarray) -> float:
    total = float(actual_counts.sum())
    if total <= 0:
        return float("nan")
    a = np.maximum(actual_counts / total, EPS)
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPS)
    return float(np.sum((a - e) * np.log(a / e)))


class DriftLayout:
    """Flattened (feature, bin) index space shared by the window and the metrics memory."""

    def __init__(self, stats: dict | None):
        self.features = []
        self.edges = []
        self.expected = []
        self.offsets = []
        off = 0
        if stats:
            for feat in stats.get("features", []):
                edges = np.asarray(feat["edges"], dtype=np.float64)
                self.features.append(feat["name"])
                self.edges.append(edges)
                self.expected.append(np.asarray(feat["proportions"], dtype=np.float64))
                self.offsets.append(off)
                off += edges.size + 1
        self.size = off
        self.n_features = len(self.features)
        self.offsets_arr = np.asarray(self.offsets, dtype=np.int64)

    def psi_values(self, counts: np.ndarray) -> list[tuple[str, float]]:
        out = []
        for name, off, exp in zip(self.features, self.offsets, self.expected):
            c = counts[off : off + exp.size]
            out.append((name, psi(exp, c)))
        return out


class DriftWindow:
    """Sliding window of the last ``size`` input rows, kept as bin counts in ``counts``.

    ``counts`` is a float64 array (possibly a view on shared memory) of
    ``layout.size`` entries; rows are folded in lazily in batches so the per
    request cost is an append to a list.
    """

    def __init__(self, layout: DriftLayout, size: int, counts: np.ndarray, rows_gauge=None):
        self.layout = layout
        self.size = max(int(size), 0)
        self.counts = counts
        self.enabled = layout.n_features > 0 and self.size > 0
        self.ring = np.zeros((self.size, layout.n_features), dtype=np.int64) if self.enabled else None
        self.filled = 0
        self.pos = 0
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0
        self.rows_gauge = rows_gauge  # callable(n) to publish the window size
        self._edges_cache: dict = {}

    def _edges_for(self, dtype) -> list:
        """Edges rounded to the input's precision: a float32 input equal to a reference value
        (e.g. 1.4) must land in the same bin as the float64 reference value did."""
        dtype = np.dtype(dtype)
        if dtype.kind != "f" or dtype.itemsize >= 8:
            return self.layout.edges
        cached = self._edges_cache.get(dtype)
        if cached is None:
            cached = [e.astype(dtype).astype(np.float64) for e in self.layout.edges]
            self._edges_cache[dtype] = cached
        return cached

    def add(self, x: np.ndarray) -> None:
        if not self.enabled:
            return
        if x.ndim != 2 or x.shape[1] != self.layout.n_features:
            return
        self.pending.append(x)
        self.pending_rows += x.shape[0]
        if self.pending_rows >= 512:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        x = np.concatenate(self.pending, axis=0) if len(self.pending) > 1 else self.pending[0]
        self.pending = []
        self.pending_rows = 0
        edges_list = self._edges_for(x.dtype)
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] > self.size:
            x = x[-self.size :]
        m = x.shape[0]
        lay = self.layout
        idx = np.empty((m, lay.n_features), dtype=np.int64)
        for j, edges in enumerate(edges_list):
            idx[:, j] = bin_index(edges, x[:, j])
        idx += lay.offsets_arr
        # Non-finite values are not counted (NaN lands past the last edge otherwise).
        finite = np.isfinite(x)
        slots = (self.pos + np.arange(m)) % self.size
        old_valid = slots < self.filled  # slot already holds a row that is being evicted
        if np.any(old_valid):
            old = self.ring[slots[old_valid]]
            old = old[old >= 0]
            np.subtract.at(self.counts, old, 1.0)
        new = np.where(finite, idx, -1)
        self.ring[slots] = new
        new = new[new >= 0]
        np.add.at(self.counts, new, 1.0)
        self.pos = (self.pos + m) % self.size
        self.filled = min(self.size, self.filled + m)
        if self.rows_gauge is not None:
            self.rows_gauge(self.filled)
