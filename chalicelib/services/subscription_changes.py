"""A subscription's saved changes: the public object, its history, and the
domain event of each change.

Every module that moves a subscription (the API's use cases in
`subscriptions`, the billing run in `issuing`, payment outcomes in
`collecting`) saves it here: the next version with its history record in one
conditional transaction (`store.save_subscription`), then the event, after
the write (a failed publish never fails the change). Keeping this below the
use cases is what lets issuing and collecting move a subscription without
importing the module that imports them.

Actors in the history: "key:<key prefix>", "user:<email>", "operator", "system".
"""
from __future__ import annotations

from datetime import datetime

from chalicelib.clock import clock, isoformat
from chalicelib.domain import lifecycle
from chalicelib.store import subscriptions as store

# Fields of the public object that are not part of its history.
_NOT_HISTORY = ("id", "object")


def system_transition(merchant_id: str, subscription_id: str, action: str) -> dict:
    """A payment's outcome on the subscription, by the system:
    `payment_succeeded` (incomplete or past_due -> active),
    `payment_failed` (active -> past_due), `payment_exhausted` (the last
    retry failed: canceled with reason payment_failed). A canceled
    subscription stays canceled; a transition that changes nothing writes
    nothing. Returns the subscription."""
    if action not in ("payment_succeeded", "payment_failed", "payment_exhausted"):
        raise ValueError(f"not a payment outcome: {action}")
    now = clock().now()
    record = store.get_subscription(merchant_id, subscription_id, consistent=True)
    before = public_fields(record)
    state = lifecycle.transition(state_of(record), action, lifecycle.Context(at=now))
    if state == state_of(record):
        return serialize(record)
    set_state(record, state, now)
    if state.status == "canceled":
        record.cancellation_reason = "payment_failed"
        change_type = "canceled"
    else:
        change_type = "activated" if state.status == "active" else "past_due"
    return commit(record, before, change_type, "system", now)


def public_fields(record: store.SubscriptionRecord) -> dict:
    """The public fields whose changes the history records."""
    return {key: value for key, value in serialize(record).items() if key not in _NOT_HISTORY}


def history_entry(record: store.SubscriptionRecord, before: dict | None, change_type: str, actor: str,
                  at: datetime, reason: str | None = None) -> store.HistoryRecord:
    """The history record of a change: the public fields it changed, before
    and after (all of them, and no before, for the creation), and why when
    the change was given a reason."""
    after = public_fields(record)
    if before is not None:
        changed = [key for key in after if after[key] != before.get(key)]
        before, after = {key: before.get(key) for key in changed}, {key: after[key] for key in changed}
    return store.HistoryRecord(at=isoformat(at), type=change_type, actor=actor, before=before, after=after,
                               reason=reason or None)


def report_change(record: store.SubscriptionRecord, entry: store.HistoryRecord) -> None:
    """What follows a saved change (never one that was not written): its
    outcome for the parts that act on it (chalicelib/outcomes.py). Its
    domain event is derived from the history entry the change wrote
    (services/domain_events.py)."""
    from chalicelib import outcomes

    outcomes.report("subscription_changed", record, entry.type)


def serialize(record: store.SubscriptionRecord) -> dict:
    return {
        "id": record.subscription_id,
        "object": "subscription",
        "customer_id": record.customer_id,
        "status": record.status,
        "paused": bool(record.paused),
        "paused_at": record.paused_at,
        "cancel_at_period_end": bool(record.cancel_at_period_end),
        "cancel_at": record.cancel_at,
        "canceled_at": record.canceled_at,
        "cancellation_reason": record.cancellation_reason,
        "cancellation_comment": record.cancellation_comment,
        "offer_id": record.offer_id,
        "offer_version": int(record.offer_version),
        "currency": record.currency,
        "options": list(record.options or []),
        "price_overrides": record.price_overrides,
        "billing_interval": record.billing_interval,
        "interval_count": int(record.interval_count),
        "timezone": record.timezone,
        "start_at": record.start_at,
        "trial_end": record.trial_end,
        "current_period_start": record.current_period_start,
        "current_period_end": record.current_period_end,
        "commitment_ends_at": record.commitment_ends_at,
        "phases": list(record.phases or []),
        "pending_change": record.pending_change,
        "next_billing_at": record.due_at,
        "created_at": record.created_at,
    }


def commit(record, before: dict, change_type: str, actor: str, at: datetime, reason: str | None = None) -> dict:
    record.updated_at = isoformat(at)
    entry = history_entry(record, before, change_type, actor, at, reason)
    store.save_subscription(record, entry)
    report_change(record, entry)
    return serialize(record)


def state_of(record) -> lifecycle.State:
    return lifecycle.State(record.status, bool(record.paused), bool(record.cancel_at_period_end))


def set_state(record, state: lifecycle.State, at: datetime) -> None:
    record.status = state.status
    record.paused = state.paused
    record.cancel_at_period_end = state.cancel_at_period_end
    if state.status == "canceled":
        record.canceled_at = isoformat(at)
        record.cancel_at_period_end = False
        record.paused = False
        record.paused_at = None
        record.pending_change = None
        record.phases = []
        # Nothing more is billed, except invoices still to issue.
        items = record.pending_invoice_items or []
        record.due_at = min((item["due_at"] for item in items), default=None)
