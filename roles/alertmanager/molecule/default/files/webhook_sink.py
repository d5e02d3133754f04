#!/usr/bin/env python3
"""Webhook sink for the alertmanager scenario: appends each POST (headers that
matter and the JSON body) as one line to a file, answers 200."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, OUT = int(sys.argv[1]), sys.argv[2]


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        record = {"path": self.path, "authorization": self.headers.get("Authorization", ""),
                  "body": json.loads(body or b"{}")}
        with open(OUT, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", PORT), Sink).serve_forever()
