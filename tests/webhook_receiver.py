"""A merchant's webhook receiver, written as a merchant would write it from
docs/api.md: a real HTTP server on 127.0.0.1 (a free port, its own thread)
that checks `Billing-Signature` with the endpoint's secret, in constant
time and within a tolerance of its own clock, before it believes a body.

The tests script its answers (`answers`, one status per request, then
`default`) and read what it received (`received`).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECONDS = 300


def verify(secret: str, header: str, body: bytes, *, now: float | None = None,
           tolerance: int = TOLERANCE_SECONDS) -> bool:
    """What a merchant's code does with `Billing-Signature: t=...,v1=...`."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class Receiver:
    def __init__(self, secret: str = ""):
        self.secret = secret
        self.answers: list[int] = []
        self.default = 200
        self.delay_seconds = 0.0
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                verified = verify(receiver.secret, self.headers.get("Billing-Signature", ""), body)
                with receiver._lock:
                    receiver.received.append(Received(self.path, dict(self.headers), body, verified))
                    status = receiver.answers.pop(0) if receiver.answers else receiver.default
                if receiver.delay_seconds:
                    time.sleep(receiver.delay_seconds)
                # A receiver refuses what it cannot verify.
                status = status if verified else 400
                answer = json.dumps({"received": verified}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/billing"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[dict]:
        return [r.event for r in self.received]
