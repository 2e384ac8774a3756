"""Domain events, derived from committed writes: the billing table's stream
holds every write with the item before and after, and each write that is
news (domain/domain_events.py says which) becomes its events on the
EventBridge bus.

Why from the stream and not published beside the write: a process that
dies between its write and a publish would lose the event; the stream
cannot lose it, whoever wrote (API, console, billing run, webhook). So:
- at least once: a record whose events were not all accepted fails, and
  the stream hands it again (with those after it in its shard);
- a stable id: `detail.event_id` is derived from the stream record and the
  event's type, the same on every delivery of it; consumers (the e-invoice
  drop, webhooks, commissions) keep one effect per id;
- the detail is the entity as the API shows it after the write (the
  record's new image), plus the merchant and the id.

The stream's readers are two (DynamoDB's advice for a standard stream):
`report_feed`, and `change_feed`, which writes the audit trail's entries
and then publishes the events of the same records.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from chalicelib.domain import audit as audit_domain
from chalicelib.domain import domain_events as rules
from chalicelib.ids import derived_id
from chalicelib.observability import logger, metrics
from chalicelib.store import changes as store


@dataclass(frozen=True)
class DomainEvent:
    event_id: str
    detail_type: str
    detail: dict
    merchant_id: str
    at: datetime


def feed_events(records: Iterable[dict]) -> list[str]:
    """Publish the events of a batch of stream records; the sequence number
    of the first record whose events could not all be published (the
    stream retries from it), or none."""
    for record in records:
        try:
            publish_record_events(record)
        except Exception:  # this record comes back from the stream; the ones after it wait behind it
            logger.exception("domain events not published; the stream will retry", extra={"event_id": record.get("eventID")})
            metrics.add_metric(name="EventPublishFailed", unit="Count", value=1)
            return [record["dynamodb"]["SequenceNumber"]]
    return []


def publish_record_events(record: dict) -> list[DomainEvent]:
    from chalicelib import notify

    events = events_of(record)
    if events:
        notify.put_domain_events(events)
    return events


def events_of(record: dict) -> list[DomainEvent]:
    """The domain events of one stream record (Lambda's shape)."""
    change = record.get("dynamodb", {})
    keys = change.get("Keys", {})
    entity = store.changed_record(keys.get("pk", {}).get("S", ""), keys.get("sk", {}).get("S", ""))
    if entity is None:
        return []
    old, new = change.get("OldImage"), change.get("NewImage")
    types = rules.event_types(entity.entity_type, _plain(old), _plain(new))
    if not types:
        return []
    at = _stream_time(change)
    source = f"{record.get('eventID')}|{change.get('SequenceNumber')}"
    events = []
    for detail_type in types:
        detail = DETAILS[entity.entity_type](detail_type, entity, old, new)
        if detail is not None:
            events.append(DomainEvent(derived_id("evt", at, f"{source}|{detail_type}"), detail_type, detail,
                                      entity.merchant_id, at))
    return events


# ---------------------------------------------------------------------------
# Details: the entity as the API shows it, and what the change adds


def _invoice(detail_type, entity, old, new) -> dict:
    from chalicelib.services import invoices

    return {"invoice": invoices.serialize(store.record_from_image("invoice", new))}


def _credit_note(detail_type, entity, old, new) -> dict:
    from chalicelib.services import credit_notes

    return {"credit_note": credit_notes.serialize(store.record_from_image("credit_note", new))}


def _customer(detail_type, entity, old, new) -> dict | None:
    from chalicelib.services import customers

    customer = customers.serialize(store.record_from_image("customer", new))
    if detail_type == "customer.payment_method_attached":
        return {"customer_id": entity.entity_id, "payment_method": customer["default_payment_method"]}
    if detail_type == "customer.updated":
        before = customers.serialize(store.record_from_image("customer", old))
        changed = sorted(key for key in customer
                         if key != "default_payment_method" and customer[key] != before.get(key))
        if not changed:
            return None
        return {"customer": customer, "previous": {key: before.get(key) for key in changed}}
    return {"customer": customer}


def _offer(detail_type, entity, old, new) -> dict:
    from chalicelib.services import offers

    return {"offer": offers.get_offer(entity.merchant_id, entity.entity_id)}


def _subscription_history(detail_type, entity, old, new) -> dict:
    from chalicelib.services import subscription_changes
    from chalicelib.store import subscriptions

    entry = store.record_from_image("subscription_history", new)
    record = subscriptions.get_subscription(entity.merchant_id, entity.entity_id, consistent=True)
    return {
        "subscription": subscription_changes.serialize(record),
        "change": {"type": entry.type, "actor": entry.actor, "at": entry.at,
                   "before": entry.before, "after": entry.after, "reason": entry.reason},
    }


def _device(detail_type, entity, old, new) -> dict:
    from chalicelib.services import devices

    previous = _text(old, "subscription_id")
    return {"device": devices.get_device(entity.merchant_id, entity.entity_id),
            "subscription_id": _text(new, "subscription_id"), "moved": previous is not None}


def _usage_event(detail_type, entity, old, new) -> dict:
    return {"events": [{
        "event_id": _text(new, "event_id"), "subscription_id": _text(new, "subscription_id"),
        "meter": _text(new, "meter"), "quantity": _text(new, "quantity"), "timestamp": _text(new, "timestamp"),
        "corrects": _text(new, "corrects"),
    }]}


def _statement(detail_type, entity, old, new) -> dict:
    from chalicelib.services import statements

    return statements.event_detail(entity.merchant_id, entity.entity_id)


DETAILS = {
    "invoice": _invoice,
    "credit_note": _credit_note,
    "customer": _customer,
    "offer": _offer,
    "offer_version": _offer,
    "subscription_history": _subscription_history,
    "device": _device,
    "usage_event": _usage_event,
    "statement": _statement,
}


def _plain(image: dict | None) -> dict[str, Any] | None:
    if image is None:
        return None
    return {name: audit_domain.shown(value) for name, value in image.items()}


def _text(image: dict | None, name: str) -> str | None:
    value = (image or {}).get(name)
    return value.get("S") if isinstance(value, dict) else None


def _stream_time(change: dict) -> datetime:
    seconds = change.get("ApproximateCreationDateTime")
    if isinstance(seconds, datetime):  # boto3 parses it when the records are read with it
        return seconds.astimezone(timezone.utc)
    return datetime.fromtimestamp(float(seconds or 0), timezone.utc)
