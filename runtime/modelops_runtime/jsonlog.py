"""JSON-lines logging to stdout (one object per line)."""

from __future__ import annotations

import json
import os
import sys
import time

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class Logger:
    def __init__(self, stream=None, level: str = "info", **static):
        self.stream = stream or sys.stdout
        self.level = LEVELS.get(level, 20)
        self.static = static
        # Rate limit for per-request error lines: at most `burst` per second.
        self._window = 0
        self._count = 0
        self._suppressed = 0
        self.burst = 50

    def _emit(self, level: str, event: str, fields: dict) -> None:
        if LEVELS[level] < self.level:
            return
        ts = time.time()
        rec = {"ts": _iso(ts), "level": level, "event": event, "pid": os.getpid()}
        rec.update(self.static)
        rec.update(fields)
        try:
            line = json.dumps(rec, default=str, separators=(",", ":"))
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stdout closed: nothing useful to do

    def debug(self, event: str, **f) -> None:
        self._emit("debug", event, f)

    def info(self, event: str, **f) -> None:
        self._emit("info", event, f)

    def warning(self, event: str, **f) -> None:
        self._emit("warning", event, f)

    def error(self, event: str, **f) -> None:
        self._emit("error", event, f)

    def limited(self, level: str, event: str, **f) -> None:
        """Log at most ``burst`` lines a second; report how many were dropped."""
        now = int(time.monotonic())
        if now != self._window:
            if self._suppressed:
                self._emit("warning", "log_suppressed", {"lines": self._suppressed})
            self._window, self._count, self._suppressed = now, 0, 0
        self._count += 1
        if self._count > self.burst:
            self._suppressed += 1
            return
        self._emit(level, event, f)
