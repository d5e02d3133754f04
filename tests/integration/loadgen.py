"""A bounded load generator for rollout tests: V2 inference over TLS through the load balancer.

Each worker thread keeps one TLS connection (like a real client with
keep-alive), verifies the server against our CA, and records the status code
and the X-Model-Version header of every response. A failure is recorded with
its wall-clock time, the worker, its exception type and message (or HTTP
status and body), and whether it happened on a reused kept-alive connection,
so that it can be laid beside the playbook's task timeline. Bounded in time
and in request count; it stops by itself. Only ever pointed at the lab's own
hosts.
"""
import http.client
import json
import socket
import ssl
import threading
import time
from collections import Counter


class LoadGenerator:
    def __init__(self, host, port, path, body, headers=None, ca_file=None, server_name=None,
                 workers=4, max_seconds=900, max_requests=200000, pause=0.0):
        self.host, self.port, self.path = host, port, path
        self.body = json.dumps(body).encode()
        self.headers = dict(headers or {}, **{"Content-Type": "application/json"})
        self.server_name = server_name or host
        self.ctx = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.workers = workers
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.pause = pause
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.statuses = Counter()
        self.versions = Counter()
        self.errors = []
        self.failures = []
        self.sent = 0
        self.latencies = []
        self._threads = []
        self.started = self.stopped = self.started_wall = None

    def _connect(self):
        if self.ctx is None:
            return http.client.HTTPConnection(self.host, self.port, timeout=10)
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=10, context=self.ctx)
        if self.server_name != self.host:
            # Verify the certificate against the name, while connecting to the address.
            raw = socket.create_connection((self.host, self.port), timeout=10)
            conn.sock = self.ctx.wrap_socket(raw, server_hostname=self.server_name)
        return conn

    def _record(self, status, version, error=None, latency=None, detail=None):
        with self._lock:
            self.statuses[status] += 1
            if version:
                self.versions[version] += 1
            if error and len(self.errors) < 50:
                self.errors.append(error)
            if detail is not None and len(self.failures) < 200:
                self.failures.append(detail)
            if latency is not None and len(self.latencies) < 500000:
                self.latencies.append(latency)

    def _take(self):
        with self._lock:
            if self.sent >= self.max_requests:
                return False
            self.sent += 1
            return True

    def _worker(self, index):
        deadline = self.started + self.max_seconds
        conn = None
        uses = 0  # requests sent on the current connection
        while not self._stop.is_set() and time.monotonic() < deadline and self._take():
            t0 = time.monotonic()
            wall = time.time()
            try:
                if conn is None:
                    conn = self._connect()
                    uses = 0
                uses += 1
                conn.request("POST", self.path, body=self.body, headers=self.headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
                version = resp.getheader("X-Model-Version")
                err = detail = None
                if status != 200:
                    err = "%d %s" % (status, data[:200].decode(errors="replace"))
                    detail = {"time": round(wall, 3), "worker": index, "kind": "http", "status": status,
                              "message": data[:300].decode(errors="replace"), "request_on_connection": uses}
                self._record(status, version, err, time.monotonic() - t0, detail)
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self._record("exception", None, "%s: %s" % (type(exc).__name__, exc), None, {
                    "time": round(wall, 3), "worker": index, "kind": "exception", "type": type(exc).__name__,
                    "message": str(exc), "request_on_connection": uses,
                    "reused_connection": uses > 1})
                if conn is not None:
                    conn.close()
                conn = None
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def start(self):
        self.started = time.monotonic()
        self.started_wall = time.time()
        self._threads = [threading.Thread(target=self._worker, args=(i,), daemon=True) for i in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.stopped = time.monotonic()
        return self.report()

    def report(self):
        lat = sorted(self.latencies)

        def pct(p):
            return round(lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))] * 1000, 2) if lat else None

        total = sum(self.statuses.values())
        return {
            "requests": total,
            "ok": self.statuses.get(200, 0),
            "failed": total - self.statuses.get(200, 0),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "versions": dict(self.versions),
            "errors": self.errors[:10],
            "failures": list(self.failures),
            "started_at": round(self.started_wall, 3) if self.started_wall else None,
            "seconds": round((self.stopped or time.monotonic()) - self.started, 1),
            "latency_ms": {"p50": pct(50), "p99": pct(99), "max": round(lat[-1] * 1000, 2) if lat else None},
        }
