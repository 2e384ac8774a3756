"""Fault injection for the integration tests, at the edges our code does not own.

- `AwsFaults` wraps moto's request handler (the `before-send` hook through
  which every botocore client, PynamoDB's included, reaches moto): a request
  can be answered with DynamoDB's throttling or conditional-check errors
  before it reaches the table, or the process can "die" (`WorkerDied`)
  just before or just after a request was applied. botocore's own retries
  run as they would against AWS.
- `StripeProxy` stands between the official stripe library and localstripe,
  with Stripe's idempotency (the first answer to an `Idempotency-Key` is
  replayed, whatever it was, as infra/local/localstripe_server.py does too), and answers
  chosen requests with 5xx or 429, before or after localstripe acted on
  them, or hangs after acting (the client times out while Stripe charged).

Nothing of our own code is replaced: what fails is AWS or Stripe as seen
from the wire.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class WorkerDied(BaseException):
    """The Lambda process ends here (timeout, out of memory, a kill): nothing
    after this point runs, no `except Exception` sees it."""


# ---------------------------------------------------------------------------
# AWS (moto)

DYNAMODB_ERRORS = {
    "throttle": (400, "ProvisionedThroughputExceededException",
                 "The level of configured provisioned throughput for the table was exceeded."),
    "condition": (400, "ConditionalCheckFailedException", "The conditional request failed"),
}


@dataclass
class AwsRule:
    operation: str  # e.g. "TransactWriteItems", "PutItem"
    fault: str  # throttle | condition | crash_before | crash_after
    times: int | None = 1  # None: every matching request
    match: Callable[[dict], bool] | None = None
    skip: int = 0  # let this many matching requests through first
    hits: int = 0
    seen: int = 0

    def applies(self, operation: str, body: dict) -> bool:
        if operation != self.operation or (self.times is not None and self.hits >= self.times):
            return False
        if self.match is not None and not self.match(body):
            return False
        self.seen += 1
        return self.seen > self.skip


@dataclass
class AwsFaults:
    rules: list[AwsRule] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def add(self, operation: str, fault: str, *, times: int | None = 1,
            match: Callable[[dict], bool] | None = None, skip: int = 0) -> AwsRule:
        rule = AwsRule(operation, fault, times, match, skip)
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    def install(self, monkeypatch) -> "AwsFaults":
        from botocore.awsrequest import AWSResponse
        from moto.core.botocore_stubber import BotocoreStubber, MockRawResponse

        original = BotocoreStubber.__call__
        faults = self

        def faulty(stubber, event_name, request, **kwargs):
            _, service, operation = (event_name.split(".") + ["", ""])[:3]
            faults.calls.append((service, operation))
            try:
                body = json.loads(request.body or b"{}") if service == "dynamodb" else {}
            except ValueError:
                body = {}
            rule = next((r for r in faults.rules if r.applies(operation, body)), None)
            if rule is None:
                return original(stubber, event_name, request, **kwargs)
            rule.hits += 1
            if rule.fault == "crash_before":
                raise WorkerDied(f"died before {operation}")
            if rule.fault == "crash_after":
                response = original(stubber, event_name, request, **kwargs)
                raise WorkerDied(f"died after {operation} ({response.status_code if response else '-'})")
            status, code, message = _dynamodb_error(rule.fault, operation, body)
            payload = {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}
            if code == "TransactionCanceledException":
                payload["CancellationReasons"] = [
                    {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}
                ] + [{"Code": "None"}] * (len(body.get("TransactItems", [])) - 1)
            headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "fault"}
            return AWSResponse(request.url, status, headers, MockRawResponse(json.dumps(payload)))

        monkeypatch.setattr(BotocoreStubber, "__call__", faulty)
        return self


def _dynamodb_error(fault: str, operation: str, body: dict) -> tuple[int, str, str]:
    if fault == "condition" and operation == "TransactWriteItems":
        return 400, "TransactionCanceledException", (
            "Transaction cancelled, please refer cancellation reasons for specific reasons [ConditionalCheckFailed]"
        )
    return DYNAMODB_ERRORS[fault]


def item_of(body: dict) -> dict:
    """The plain string attributes of a PutItem's item (or an UpdateItem's key)."""
    raw = body.get("Item") or body.get("Key") or {}
    return {name: value.get("S", value.get("N")) for name, value in raw.items()}


def transaction_items(body: dict) -> list[dict]:
    """The plain attributes of each Put of a TransactWriteItems."""
    found = []
    for entry in body.get("TransactItems", []):
        for kind in ("Put", "Update", "Delete", "ConditionCheck"):
            if kind in entry:
                raw = entry[kind].get("Item") or entry[kind].get("Key") or {}
                found.append({name: value.get("S", value.get("N")) for name, value in raw.items()})
    return found


# ---------------------------------------------------------------------------
# Stripe (localstripe behind a proxy)


@dataclass
class StripeRule:
    method: str
    path: str  # a prefix of the request path, e.g. "/v1/payment_intents"
    # status_before: refused before Stripe acted (nothing kept for the key);
    # status_kept: Stripe failed before acting and keeps that answer for the key;
    # status_after: Stripe acted, then answered an error; hang_after: acted, then no answer.
    fault: str
    status: int = 500
    times: int | None = 1
    hits: int = 0

    def applies(self, method: str, path: str) -> bool:
        if method != self.method or not path.startswith(self.path):
            return False
        return self.times is None or self.hits < self.times


class StripeProxy:
    """An HTTP server in front of localstripe. `requests` lists every
    (method, path) received; `rules` decide which ones fail and how."""

    HANG_SECONDS = 1.5

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.rules: list[StripeRule] = []
        self.requests: list[tuple[str, str]] = []
        self.replayed: list[str] = []
        self._answers: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                proxy._serve(self)

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, method: str, path: str, fault: str, *, status: int = 500, times: int | None = 1) -> StripeRule:
        rule = StripeRule(method, path, fault, status, times)
        self.rules.append(rule)
        return rule

    def heal(self) -> None:
        self.rules.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(path))

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        method, path = handler.command, handler.path
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        key = handler.headers.get("Idempotency-Key") if method == "POST" else None
        with self._lock:
            self.requests.append((method, path.split("?")[0]))
            rule = next((r for r in self.rules if r.applies(method, path)), None)
            if rule is not None:
                rule.hits += 1
            stored = self._answers.get(key) if key else None
        if stored is not None and not (rule is not None and rule.fault == "hang_after"):
            # Stripe: the same idempotency key gets the first answer again.
            self.replayed.append(key)
            self._answer(handler, *stored)
            return
        if rule is not None and rule.fault in ("status_before", "status_kept"):
            if rule.fault == "status_kept" and key:
                # Stripe's endpoint began and failed: that answer is the key's.
                with self._lock:
                    self._answers.setdefault(key, (rule.status, _error_body(rule.status)))
            self._answer(handler, rule.status, _error_body(rule.status))
            return
        if stored is not None:
            self.replayed.append(key)
            status, answer = stored
        else:
            status, answer = self._forward(method, path, handler.headers, body)
        if rule is not None and rule.fault == "status_after":
            status, answer = rule.status, _error_body(rule.status)
        if key and status != 429:
            # Stripe keeps the first result of a key, errors included, except
            # a request it refused before acting (rate limited).
            with self._lock:
                self._answers.setdefault(key, (status, answer))
        if rule is not None and rule.fault == "hang_after":
            time.sleep(self.HANG_SECONDS)
        try:
            self._answer(handler, status, answer)
        except OSError:
            pass  # the client gave up waiting

    def _forward(self, method: str, path: str, headers, body: bytes) -> tuple[int, bytes]:
        request = urllib.request.Request(f"{self.upstream}{path}", data=body if method != "GET" else None,
                                         method=method)
        for name in ("Authorization", "Content-Type", "Stripe-Version"):
            if headers.get(name):
                request.add_header(name, headers[name])
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        if status == 429:
            handler.send_header("Stripe-Should-Retry", "false")
        handler.end_headers()
        handler.wfile.write(body)


def _error_body(status: int) -> bytes:
    kind = "rate_limit_error" if status == 429 else "api_error"
    return json.dumps({"error": {"type": kind, "message": f"injected {status}"}}).encode()
