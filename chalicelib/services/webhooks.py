"""Merchant webhooks: endpoints, and every domain event delivered to the
endpoints that listen to it, at least once (docs/api.md, "Webhook
endpoints"; docs/architecture.md, "Merchant webhooks").

- The dispatcher (`dispatch_event`, the webhook queue's consumer, fed by
  WebhookRule with every event of the bus) makes one delivery per matching
  endpoint, keyed by event and endpoint (a redelivered event makes none),
  and attempts each at once.
- An attempt claims its delivery (a version-checked write that also puts it
  in the `due` index at the end of a lease), sends the signed body through
  chalicelib.webhook_sender, and writes the outcome with the next attempt,
  backed off (domain.webhooks.next_attempt_at), or none: `succeeded`, or
  `failed` once 3 days have passed since the first attempt.
- The retry job (`due_attempts`, every minute) finds the deliveries owed an
  attempt, a retry or one whose sender died, and queues one message each
  for the same consumer (or, on the local clock, makes the attempts itself).
- `retry_delivery` is the merchant's manual retry: an attempt now, whatever
  the delivery's state.
"""
from __future__ import annotations

import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from chalicelib.clock import clock, isoformat, parse_instant
from chalicelib.config import settings
from chalicelib.domain import webhooks as rules
from chalicelib.domain.errors import Conflict, InvalidRequest, NotFound
from chalicelib.ids import new_id
from chalicelib.observability import logger
from chalicelib.store import webhooks as store
from chalicelib.store.due import due_key

# Stripe's limit, and what one event's dispatch can attempt in parallel.
MAX_ENDPOINTS = 16
# How long an attempt holds its delivery: past it, the retry job takes over.
ATTEMPT_LEASE = timedelta(seconds=60)
ATTEMPT_MESSAGE = "webhook_attempt"


def new_secret() -> str:
    """`whsec_` and 43 URL-safe characters (256 random bits)."""
    return f"whsec_{secrets.token_urlsafe(32)}"


# -- endpoints ------------------------------------------------------------------------


def create_endpoint(merchant_id: str, url: str, events: list[str], description: str | None = None) -> dict:
    problem = rules.url_problem(url, deployed=settings().is_deployed)
    if problem:
        raise InvalidRequest(problem, param="url")
    if len(store.all_endpoints(merchant_id)) >= MAX_ENDPOINTS:
        raise Conflict(f"a merchant has at most {MAX_ENDPOINTS} webhook endpoints; delete one first",
                       code="too_many_endpoints")
    secret = new_secret()
    record = store.new_endpoint(merchant_id, new_id("we"), url=url, events=list(dict.fromkeys(events)),
                                secret=secret, description=description, created_at=isoformat(clock().now()))
    store.save_endpoint(record)
    logger.info("webhook endpoint created", extra={"endpoint_id": record.endpoint_id, "events": record.events})
    return {**serialize_endpoint(record), "secret": secret}


def list_endpoints(merchant_id: str, *, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    records, next_cursor = store.list_endpoints(merchant_id, limit=limit, cursor=cursor)
    return [serialize_endpoint(r) for r in records], next_cursor


def get_endpoint(merchant_id: str, endpoint_id: str) -> dict:
    return serialize_endpoint(_endpoint(merchant_id, endpoint_id))


def delete_endpoint(merchant_id: str, endpoint_id: str) -> dict:
    if not store.delete_endpoint(merchant_id, endpoint_id):
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return {"object": "webhook_endpoint", "id": endpoint_id, "deleted": True}


def serialize_endpoint(record: store.WebhookEndpointRecord) -> dict:
    return {"object": "webhook_endpoint", "id": record.endpoint_id, "url": record.url, "events": list(record.events),
            "description": record.description, "status": record.status, "created_at": record.created_at}


def _endpoint(merchant_id: str, endpoint_id: str) -> store.WebhookEndpointRecord:
    record = store.find_endpoint(merchant_id, endpoint_id)
    if record is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return record


# -- deliveries -------------------------------------------------------------------------


def list_deliveries(merchant_id: str, endpoint_id: str, *, limit: int,
                    cursor: str | None) -> tuple[list[dict], str | None]:
    _endpoint(merchant_id, endpoint_id)
    records, next_cursor = store.list_deliveries(merchant_id, endpoint_id, limit=limit, cursor=cursor)
    return [serialize_delivery(r) for r in records], next_cursor


def retry_delivery(merchant_id: str, endpoint_id: str, delivery_id: str) -> dict:
    """An attempt now, whatever the delivery's state; the delivery after it."""
    endpoint = _endpoint(merchant_id, endpoint_id)
    record = store.find_delivery(merchant_id, delivery_id)
    if record is None or record.endpoint_id != endpoint_id:
        raise NotFound(f"no delivery {delivery_id} of webhook endpoint {endpoint_id}")
    if not _attempt(record, endpoint, clock().now(), manual=True):
        raise Conflict("another attempt of this delivery was made at the same moment; read it again",
                       code="version_conflict")
    return serialize_delivery(store.find_delivery(merchant_id, delivery_id))


def serialize_delivery(record: store.WebhookDeliveryRecord) -> dict:
    return {"object": "webhook_delivery", "id": record.delivery_id, "endpoint_id": record.endpoint_id,
            "event_id": record.event_id, "event_type": record.event_type, "status": record.status,
            "created_at": record.created_at, "next_attempt_at": record.next_attempt_at,
            "attempts": record.attempts()}


# -- dispatch and attempts ----------------------------------------------------------------


def handle_message(message: dict) -> dict | None:
    """One record of the webhook queue: a domain event from the bus, or an
    attempt the retry job queued."""
    if message.get("type") == ATTEMPT_MESSAGE:
        return attempt_delivery(message["merchant_id"], message["delivery_id"])
    return dispatch_event(message)


def event_identity(event: dict) -> tuple[str | None, str | None, str | None]:
    """(merchant_id, event_id, event type) of a bus event: the event's own
    stable id (`detail.event_id`), else EventBridge's id of the envelope."""
    detail = event.get("detail") if isinstance(event.get("detail"), dict) else {}
    event_id = detail.get("event_id") or event.get("id")
    return detail.get("merchant_id"), event_id, event.get("detail-type")


def dispatch_event(event: dict) -> dict | None:
    """One delivery for each endpoint of the event's merchant that listens to
    its type, each attempted now. None for what is not a billing event."""
    merchant_id, event_id, event_type = event_identity(event)
    if event.get("source") != "billing" or not (merchant_id and event_id and event_type):
        logger.warning("not a billing event; no webhook", extra={"source": event.get("source"),
                                                                "detail_type": event_type})
        return None
    endpoints = [e for e in store.all_endpoints(merchant_id)
                 if e.status == "enabled" and rules.matches(e.events, event_type)]
    if not endpoints:
        return {"event_id": event_id, "deliveries": 0}
    now = clock().now()
    body = rules.event_body(event_id, event_type, event.get("time") or isoformat(now), event["detail"])
    made = []
    for endpoint in endpoints:
        record = store.new_delivery(merchant_id, endpoint.endpoint_id, event_id=event_id, event_type=event_type,
                                    body=body, now=now)
        if store.record_delivery(record):
            made.append((record, endpoint))
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_ENDPOINTS, len(made)))) as pool:
        list(pool.map(lambda pair: _attempt(pair[0], pair[1], now), made))
    return {"event_id": event_id, "deliveries": len(made)}


def attempt_delivery(merchant_id: str, delivery_id: str, now: datetime | None = None) -> dict | None:
    """The attempt a delivery is owed by `now` (the clock's by default), if
    it still is (a message queued twice, or late, finds it done or not yet
    due, and does nothing)."""
    now = now or clock().now()
    record = store.find_delivery(merchant_id, delivery_id)
    if record is None or record.status != "pending" or not record.due_at or record.due_at > due_key(now):
        return None
    endpoint = store.find_endpoint(merchant_id, record.endpoint_id)
    _attempt(record, endpoint, now)
    return {"delivery_id": delivery_id}


def _attempt(record: store.WebhookDeliveryRecord, endpoint: store.WebhookEndpointRecord | None, now: datetime,
             *, manual: bool = False) -> bool:
    """Claim, send, record. False when another sender holds the delivery."""
    from chalicelib import webhook_sender

    if not store.claim_delivery(record, now + ATTEMPT_LEASE):
        return False
    if endpoint is None:
        outcome = webhook_sender.Outcome(None, "endpoint_deleted", 0)
    else:
        outcome = webhook_sender.post(endpoint.url, record.body, secret=endpoint.secret,
                                      public_only=settings().is_deployed)
    attempt = {"at": isoformat(now), "status_code": outcome.status_code, "error": outcome.error,
               "duration_ms": outcome.duration_ms, "manual": manual}
    first = record.first_attempt_at or isoformat(now)
    failures = record.failures
    if rules.is_success(outcome.status_code):
        status, next_attempt = "succeeded", None
    elif endpoint is None:
        status, next_attempt = "failed", None
    elif manual and record.status != "pending":
        status, next_attempt = record.status, None  # a retry asked for does not restart the schedule
    else:
        failures += 1
        next_attempt = rules.next_attempt_at(parse_instant(first), failures, now)
        status = "pending" if next_attempt else "failed"
    recorded = store.record_attempt(record, attempt, status=status, failures=failures, first_attempt_at=first,
                                    next_attempt=next_attempt)
    log = logger.info if status != "failed" else logger.warning
    log("webhook attempt", extra={"delivery_id": record.delivery_id, "endpoint_id": record.endpoint_id,
                                  "event_type": record.event_type, "status_code": outcome.status_code,
                                  "error": outcome.error, "status": status, "recorded": recorded})
    return recorded


def due_attempts(now: datetime) -> list[dict]:
    """The queue messages of every delivery owed an attempt by `now`."""
    return [{"type": ATTEMPT_MESSAGE, "merchant_id": merchant_id, "delivery_id": delivery_id}
            for merchant_id, delivery_id in store.due_deliveries(now)]


def run_due_attempts(now: datetime, inline: bool) -> dict:
    """The retry job: queue an attempt for each delivery owed one, or make
    them here (`inline`: the local clock, which returns once they are made)."""
    messages = due_attempts(now)
    if inline:
        done = [attempt_delivery(m["merchant_id"], m["delivery_id"], now) for m in messages]
        return {"due": len(messages), "attempted": sum(1 for d in done if d)}
    from chalicelib import queues

    unsent = queues.send(settings().webhook_queue_url,
                         [json.dumps(m, sort_keys=True, separators=(",", ":")) for m in messages]) if messages else []
    if unsent:
        logger.warning("webhook attempts not queued; the next run finds them", extra={"count": len(unsent)})
    return {"due": len(messages), "enqueued": len(messages) - len(unsent)}
