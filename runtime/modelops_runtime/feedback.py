"""The prediction journal behind ground-truth feedback, in shared memory.

Every infer and /predict answer is recorded under its request id, so that a label
that arrives later (``POST /v2/models/<name>/feedback``) can be compared with what
the model answered, whichever worker took the inference and whichever takes the
feedback.

Like the metrics, the journal is one anonymous shared mapping made by the
supervisor before it forks. It holds one *region* per worker; a worker writes only
its own region and reads all of them, so there are no locks. A region has

* a header: the last record sequence number, the rows written so far, the labels
  written so far;
* ``capacity`` record slots, used as a ring: ``seq, key, time, rows | kind << 32,
  first value index`` (``seq`` 0 means "being written / empty");
* ``capacity`` value slots, a ring of float64, one per answered row: the first
  output's value (a class label, a string label's 48-bit hash, or a number);
* ``capacity`` tombstones: the key of the record a slot held before it was reused,
  so an overwritten id is reported as expired rather than unknown;
* ``capacity`` labelled slots, a ring of the records this worker took feedback for
  (``worker << 48 | seq``), so a second label for the same answer is refused
  whichever worker receives it.

Writers store ``seq = 0`` first and the new ``seq`` last; a reader copies a record,
then checks its ``seq`` and key again and that its values were not overwritten
meanwhile, so it never uses a half-written record (8-byte aligned stores are not
torn on the platforms this runs on).

Cost per recorded answer: one blake2b hash of the id and a handful of stores
(measured in the README, "Feedback").
"""

from __future__ import annotations

import hashlib
import mmap
import time

HEADER = 4          # uint64 per region header: seq, values written, labels written, spare
META = 5            # uint64 per record: seq, key, time (float64 bits), rows | kind << 32, first value index
KIND_NUMBER = 0     # values are the numbers the model answered (labels or regression values)
KIND_STRING = 1     # values are 48-bit hashes of string labels (exact in float64)
MAX_ID_CHARS = 256


def region_words(capacity: int) -> int:
    return HEADER + capacity * (META + 3)


def key_of(request_id: str) -> int:
    """A non-zero 63-bit key for a request id (0 marks an empty slot)."""
    h = int.from_bytes(hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
    return (h >> 1) or 1


def string_label(value) -> float:
    """A string label as an exactly representable float (its 48-bit hash)."""
    if isinstance(value, bytes):
        raw = value
    else:
        raw = str(value).encode("utf-8", "surrogatepass")
    return float(int.from_bytes(hashlib.blake2b(raw, digest_size=6).digest(), "little"))


class SharedJournal:
    """The shared mapping itself (made by the supervisor, which has no numpy)."""

    def __init__(self, workers: int, capacity: int):
        self.workers = workers
        self.capacity = capacity
        self.mm = mmap.mmap(-1, max(workers * region_words(capacity) * 8, 8)) if capacity > 0 else None


class Journal:
    """One worker's view: it records into its own region and looks up in all of them."""

    def __init__(self, shared: SharedJournal, index: int, ttl: float):
        import numpy as np

        self.np = np
        self.index = index
        self.capacity = cap = shared.capacity
        self.workers = shared.workers
        self.ttl = ttl
        self.enabled = cap > 0 and shared.mm is not None
        if not self.enabled:
            return
        words = region_words(cap)
        allw = np.frombuffer(shared.mm, dtype=np.uint64, count=shared.workers * words).reshape(shared.workers, words)
        self.header = allw[:, :HEADER]
        off = HEADER
        self.meta = allw[:, off : off + cap * META].reshape(shared.workers, cap, META)
        self.meta_f = self.meta.view(np.float64)
        off += cap * META
        self.values = allw[:, off : off + cap].view(np.float64)
        off += cap
        self.tombs = allw[:, off : off + cap]
        off += cap
        self.labelled = allw[:, off : off + cap]
        self.keys = self.meta[:, :, 1]
        self.own_header = self.header[index]
        self.own_meta = self.meta[index]
        self.own_meta_f = self.meta_f[index]
        self.own_values = self.values[index]
        self.own_tombs = self.tombs[index]
        self.own_labelled = self.labelled[index]
        # Flat views of the whole mapping for the hot path (offsets in 8-byte words).
        self.u = memoryview(shared.mm).cast("Q")
        self.d = memoryview(shared.mm).cast("d")
        self.base = index * words
        self.value_base = self.base + HEADER + cap * META
        self.tomb_base = self.value_base + cap
        # A restarted worker carries on where its predecessor stopped (the mapping survives it).
        self.seq = int(self.own_header[0])
        self.vtotal = int(self.own_header[1])
        self.ltotal = int(self.own_header[2])

    # ------------------------------------------------------------------ hot path
    def record(self, request_id: str, values, kind: int) -> None:
        """Record one answer: ``values`` is a numeric array, one value per row.

        Scalar stores go through memoryviews (cheaper than numpy scalar assignment)."""
        n = values.shape[0]
        cap = self.capacity
        if n == 0 or n > cap:
            return
        u, base = self.u, self.base
        seq = self.seq + 1
        m = base + HEADER + (seq % cap) * META
        old_seq = u[m]
        u[m] = 0  # invalid while it is rewritten
        if old_seq:
            u[self.tomb_base + seq % cap] = u[m + 1]
        start = self.vtotal
        vpos = start % cap
        end = vpos + n
        vals = self.own_values
        if n == 1:
            self.d[self.value_base + vpos] = values[0]
        elif end <= cap:
            vals[vpos:end] = values
        else:
            first = cap - vpos
            vals[vpos:] = values[:first]
            vals[: n - first] = values[first:]
        self.vtotal = start + n
        u[base + 1] = self.vtotal
        u[m + 1] = key_of(request_id)
        self.d[m + 2] = time.time()
        u[m + 3] = n | (kind << 32)
        u[m + 4] = start
        u[m] = seq
        self.seq = seq
        u[base] = seq

    # ------------------------------------------------------------------ feedback
    def find(self, request_id: str):
        """("found", record) | ("expired", why) | ("unknown", None).

        record = (identity, recorded_at, rows, kind, values as a list)."""
        np = self.np
        key = key_of(request_id)
        best = None
        overwritten = False
        for w, p in zip(*np.nonzero(self.keys == np.uint64(key))):
            rec = self._read(int(w), int(p), key)
            if rec == "overwritten":
                overwritten = True
            elif rec is not None and (best is None or rec[1] > best[1]):
                best = rec
        now = time.time()
        if best is not None:
            if now - best[1] > self.ttl:
                return "expired", f"recorded {now - best[1]:.0f} s ago, longer than feedback_ttl_s ({self.ttl:g} s)"
            return "found", best
        if overwritten or np.any(self.tombs == np.uint64(key)):
            return "expired", f"overwritten by newer answers (the journal keeps {self.capacity} rows per worker)"
        return "unknown", None

    def _read(self, w: int, p: int, key: int):
        meta = self.meta[w, p]
        seq = int(meta[0])
        if not seq:
            return None
        t = float(self.meta_f[w, p, 2])
        word = int(meta[3])
        start = int(meta[4])
        n, kind = word & 0xFFFFFFFF, word >> 32
        cap = self.capacity
        vpos = start % cap
        if vpos + n <= cap:
            vals = self.values[w, vpos : vpos + n].tolist()
        else:
            vals = self.values[w, vpos:].tolist() + self.values[w, : n - (cap - vpos)].tolist()
        # Re-check: the same record still, and its values not overwritten since.
        if int(meta[0]) != seq or int(meta[1]) != key:
            return None
        if int(self.header[w, 1]) - start > cap:
            return "overwritten"
        return (w << 48) | seq, t, n, kind, vals

    def labelled_already(self, identity: int) -> bool:
        return bool(self.np.any(self.labelled == self.np.uint64(identity)))

    def mark_labelled(self, identity: int) -> None:
        self.own_labelled[self.ltotal % self.capacity] = identity
        self.ltotal += 1
        self.own_header[2] = self.ltotal
