"""A small per-worker LRU cache of predictions, keyed by the exact input values."""

from __future__ import annotations

from collections import OrderedDict

# Inputs bigger than this are never cached (they would evict everything else
# and hashing them costs more than it saves).
MAX_KEY_BYTES = 64 * 1024


class PredictionCache:
    def __init__(self, size: int):
        self.size = int(size)
        self._d: OrderedDict = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.size > 0

    @staticmethod
    def key(feeds: dict, wanted) -> tuple | None:
        parts = []
        total = 0
        for name in sorted(feeds):
            arr = feeds[name]
            if arr.dtype.kind == "O":
                data = repr(arr.tolist()).encode()
            else:
                data = arr.tobytes()
            total += len(data)
            if total > MAX_KEY_BYTES:
                return None
            parts.append((name, arr.dtype.str, arr.shape, data))
        return (tuple(parts), tuple(wanted) if wanted else None)

    def get(self, key):
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key, value) -> None:
        d = self._d
        d[key] = value
        d.move_to_end(key)
        if len(d) > self.size:
            d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)
