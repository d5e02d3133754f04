"""Keep-alive clients for the reload test: paced V2-style POSTs through one
kept-alive TLS connection each, for a bounded time; prints a JSON summary.

usage: reload_client.py HOST KEY SECONDS
"""
import http.client
import json
import ssl
import sys
import threading
import time

HOST, KEY, SECONDS = sys.argv[1], sys.argv[2], float(sys.argv[3])
CTX = ssl.create_default_context(cafile="/etc/modelops/pki/ca.crt")
lock = threading.Lock()
summary = {"requests": 0, "ok": 0, "closed_by_server": 0, "errors": []}


def client():
    end = time.monotonic() + SECONDS
    conn = None
    while time.monotonic() < end:
        try:
            if conn is None:
                conn = http.client.HTTPSConnection(HOST, 443, timeout=10, context=CTX)
            conn.request("POST", "/v2/models/echo/infer", body=b'{"inputs": []}',
                         headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            close = resp.getheader("Connection", "").lower() == "close"
            with lock:
                summary["requests"] += 1
                summary["ok"] += resp.status == 200
                summary["closed_by_server"] += close
                if resp.status != 200:
                    summary["errors"].append("HTTP %d" % resp.status)
            if close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as exc:
            with lock:
                summary["requests"] += 1
                summary["errors"].append("%.3f %s: %s" % (time.time(), type(exc).__name__, exc))
            if conn is not None:
                conn.close()
            conn = None
        time.sleep(0.25)  # 4 clients at ~4 requests/s each stay under the scenario's rate limit


threads = [threading.Thread(target=client) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(summary))
