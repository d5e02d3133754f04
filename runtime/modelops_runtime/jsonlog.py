"""JSON-lines logging to stdout (one object per line), with Elastic Common Schema field names.

Every line has ``@timestamp`` (ISO 8601, UTC, milliseconds), ``log.level``, ``message``
(the event name, also in ``event.action``), ``ecs.version``, ``service.name`` and
``process.pid``. Fields with an ECS meaning get their ECS name (``FIELD_NAMES``); every
other field is kept under ``modelops.<name>``."""

from __future__ import annotations

import json
import os
import sys
import time

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
ECS_VERSION = "8.11.0"
SERVICE = "modelops-runtime"
# Logged field -> ECS field; anything not listed goes to "modelops.<field>".
FIELD_NAMES = {
    "request_id": "http.request.id",
    "method": "http.request.method",
    "path": "url.path",
    "status": "http.response.status_code",
    "duration_ns": "event.duration",
    "error": "error.message",
    "detail": "error.message",
    "host": "server.address",
    "port": "server.port",
    "uid": "user.id",
    "signal": "process.signal",
    "code": "process.exit_code",
    "name": "modelops.model.name",
    "version": "modelops.model.version",
    "framework": "modelops.model.framework",
}


def ecs_name(field: str) -> str:
    name = FIELD_NAMES.get(field)
    if name is not None:
        return name
    return field if "." in field else "modelops." + field


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class Logger:
    def __init__(self, stream=None, level: str = "info", **static):
        self.stream = stream or sys.stdout
        self.level = LEVELS.get(level, 20)
        self.static = {ecs_name(k): v for k, v in static.items()}
        # Rate limit for per-request error lines: at most `burst` per second.
        self._window = 0
        self._count = 0
        self._suppressed = 0
        self.burst = 50

    def _emit(self, level: str, event: str, fields: dict) -> None:
        if LEVELS[level] < self.level:
            return
        ts = time.time()
        rec = {"@timestamp": _iso(ts), "log.level": level, "message": event, "ecs.version": ECS_VERSION,
               "service.name": SERVICE, "event.action": event, "process.pid": os.getpid()}
        rec.update(self.static)
        for k, v in fields.items():
            rec[ecs_name(k)] = v
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
