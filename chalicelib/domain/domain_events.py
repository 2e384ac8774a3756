"""Which domain events one committed write makes, from the record's image
before and after it (the billing table's stream, NEW_AND_OLD_IMAGES).

An event is news of a write: it is derived from the write itself, never
published beside it, so a process that dies after writing loses nothing
(services/domain_events.py publishes what this names, at least once, with
an id derived from the stream record). The rules here say, for each kind
of record, which change is which event: pure, images in (as plain JSON
values: domain/audit.py `shown`), event types out, in the order they
happened.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.domain.commissions import statement_event_types

Image = Mapping[str, Any]

SUBSCRIPTION_EVENTS = {
    "created": "subscription.created",
    "changed": "subscription.updated",
    "change_scheduled": "subscription.change_scheduled",
    "cancellation_scheduled": "subscription.cancellation_scheduled",
    "canceled": "subscription.canceled",
    "reactivated": "subscription.reactivated",
    "paused": "subscription.paused",
    "resumed": "subscription.resumed",
    "activated": "subscription.activated",
    "past_due": "subscription.past_due",
}

# A customer's fields that its payment method or its balances move: their
# changes have their own events (or none), not `customer.updated`.
CUSTOMER_OWN_EVENTS = frozenset({"default_card", "card_expiry", "stripe_customer_id"})


def event_types(kind: str, old: Image | None, new: Image | None) -> list[str]:
    """The events of one write of a record of `kind` (None: no such image)."""
    rule = RULES.get(kind)
    if rule is None or new is None:
        return []
    return rule(old, new)


def subscription_event(change_type: str) -> str:
    """The event of a subscription's change (its history entry's type)."""
    return SUBSCRIPTION_EVENTS.get(change_type, f"subscription.{change_type}")


def _invoice(old: Image | None, new: Image) -> list[str]:
    status = new.get("status")
    if status == "draft":
        return []
    before = old or {}
    events = []
    if not before or before.get("status") == "draft":
        events += ["invoice.created", "invoice.finalized"]
        before = {}
    if status == "paid" and before.get("status") != "paid":
        events.append("invoice.paid")
    # An attempt closed because the invoice was settled otherwise (paid in
    # cash, voided) failed nothing: only an invoice still owed has a failure.
    failed = _count(new, "payment_attempts", status="failed") > _count(before, "payment_attempts", status="failed")
    if failed and status in ("open", "uncollectible"):
        events.append("invoice.payment_failed")
    if status == "uncollectible" and before.get("status") != "uncollectible":
        events.append("invoice.marked_uncollectible")
    if status == "void" and before.get("status") != "void":
        events.append("invoice.voided")
    if not before:
        return events
    if _count(new, "stray_refunds", status="succeeded") > _count(before, "stray_refunds", status="succeeded"):
        events.append("invoice.payment_refunded")
    if status != "paid" and _count(new, "offline_payments") > _count(before, "offline_payments"):
        events.append("invoice.payment_recorded")
    if "invoice.paid" not in events and _count(new, "credit_notes") > _count(before, "credit_notes"):
        events.append("invoice.updated")
    return events


def _credit_note(old: Image | None, new: Image) -> list[str]:
    if old is None:
        return ["credit_note.created"]
    if new.get("refund_id") and not old.get("refund_id"):
        return ["credit_note.refunded"]
    return []


def _customer(old: Image | None, new: Image) -> list[str]:
    if old is None:
        return ["customer.created"]
    events = []
    if _changed(old, new, exclude=CUSTOMER_OWN_EVENTS | BOOKKEEPING):
        events.append("customer.updated")
    if new.get("default_card") and new.get("default_card") != old.get("default_card"):
        events.append("customer.payment_method_attached")
    return events


def _offer(old: Image | None, new: Image) -> list[str]:
    if old is None:
        return ["offer.created"]
    if new.get("archived") and not old.get("archived"):
        return ["offer.archived"]
    return []


def _offer_version(old: Image | None, new: Image) -> list[str]:
    # The first version is written with its offer: `offer.created` tells of both.
    if old is None and int(new.get("version") or 1) > 1:
        return ["offer.version_created"]
    return []


def _subscription_history(old: Image | None, new: Image) -> list[str]:
    return [subscription_event(str(new.get("type")))] if old is None else []


def _device(old: Image | None, new: Image) -> list[str]:
    attached = new.get("subscription_id")
    if attached and (old is None or old.get("subscription_id") != attached):
        return ["device.attached"]
    return []


def _usage_event(old: Image | None, new: Image) -> list[str]:
    return ["usage.recorded"] if old is None else []


# Bookkeeping every record carries (keys, locks, stamps): a write that moves
# only these changed nothing anyone subscribes to.
BOOKKEEPING = frozenset({
    "pk", "sk", "kind", "merchant_id", "version", "actor", "acted_at", "updated_at", "expires_at",
    "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "due_shard", "due_at", "request",
})


def _changed(old: Image, new: Image, *, exclude: frozenset[str]) -> bool:
    names = (old.keys() | new.keys()) - exclude
    return any(old.get(name) != new.get(name) for name in names)


def _count(image: Image, name: str, **matching: Any) -> int:
    entries = image.get(name) or []
    if not isinstance(entries, list):
        return 0
    return sum(1 for entry in entries
               if isinstance(entry, Mapping) and all(entry.get(k) == v for k, v in matching.items()))


RULES = {
    "invoice": _invoice,
    "credit_note": _credit_note,
    "customer": _customer,
    "offer": _offer,
    "offer_version": _offer_version,
    "subscription_history": _subscription_history,
    "device": _device,
    "usage_event": _usage_event,
    "statement": statement_event_types,
}
