#!/usr/bin/env python3
"""A stand-in model replica for the nginx scenario: answers every GET/POST on
127.0.0.1:<port> with JSON describing the request it received (path, method,
headers, body length), so tests can see what the gateway forwarded."""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        out = json.dumps({
            "port": self.server.server_address[1],
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_length": len(body),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        # A replica sets its own request id; the gateway must return only one.
        self.send_header("X-Request-ID", "from-upstream")
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    # One listener per port given (two replicas of a model: 8601 8603).
    servers = [ThreadingHTTPServer(("127.0.0.1", int(port)), Echo) for port in sys.argv[1:]]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()
