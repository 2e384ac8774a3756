"""The one gateway for what leaves the backend as a notification: domain
events to Amazon EventBridge (and, with the alerts, e-mail through SES).

Events are published after the change they describe is written, and a
failed publish never fails the change: the write is the fact, the event is
news of it. A publish that fails is logged with its whole entry (so it can be
replayed by hand) and counted in the `EventPublishFailed` metric. Delivery is
therefore at most once for now; when merchants need every event, an outbox
record written in the change's own transaction and drained by a stream
handler makes it at least once without touching the callers.
"""
from __future__ import annotations

import json
import threading
from typing import Any

from chalicelib.config import settings
from chalicelib.observability import logger, metrics

SOURCE = "billing"

_client = None
_client_lock = threading.Lock()


def _events():
    """The EventBridge client, built on first use (most handlers never publish)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                import boto3

                from chalicelib.store.base import region

                _client = boto3.client("events", region_name=region())
    return _client


def publish_event(detail_type: str, detail: dict, merchant_id: str) -> bool:
    """Publish one domain event (`source` billing) on the billing bus.

    `detail_type` names what happened (`subscription.canceled`); `detail`
    is JSON-able and gets `merchant_id` added, so a merchant's rule can
    match its own events. Returns whether EventBridge accepted the event;
    never raises for a delivery problem."""
    entry = {
        "Source": SOURCE,
        "DetailType": detail_type,
        "Detail": json.dumps({**detail, "merchant_id": merchant_id}, separators=(",", ":"), default=str),
        "EventBusName": settings().event_bus_name,
    }
    try:
        answer = _events().put_events(Entries=[entry])
        failed = answer.get("FailedEntryCount", 0)
        if failed:
            raise RuntimeError(f"EventBridge refused the event: {answer.get('Entries')}")
    except Exception:  # any failure of delivery: the change itself is already written
        logger.exception("domain event not published", extra={"event": _loggable(entry)})
        metrics.add_metric(name="EventPublishFailed", unit="Count", value=1)
        return False
    return True


def _loggable(entry: dict[str, Any]) -> dict[str, Any]:
    return {"detail_type": entry["DetailType"], "bus": entry["EventBusName"], "detail": entry["Detail"]}
