"""Devices: attaching a machine to a subscription, and what it last reported."""
from __future__ import annotations

from datetime import datetime, timezone

from chalicelib.clock import clock
from chalicelib.observability import logger
from chalicelib.domain.errors import Conflict, NotFound
from chalicelib.domain.periods import Interval
from chalicelib.domain.usage import UsageCalendar
from chalicelib.store import devices as store


def subscription_calendar(merchant_id: str, subscription_id: str, *, param: str = "subscription_id") -> tuple:
    """(the subscription record, what a device copies from it), or 404 naming `param`."""
    from chalicelib.store import subscriptions as subscriptions_store

    try:
        record = subscriptions_store.get_subscription(merchant_id, subscription_id, consistent=True)
    except NotFound as error:
        raise NotFound(error.message, param=param) from None
    return record, attachment_of(record)


def attachment_of(record) -> store.AttachedSubscription:
    """What a device copies from a subscription record."""
    return store.AttachedSubscription(
        subscription_id=record.subscription_id,
        customer_id=record.customer_id,
        calendar=UsageCalendar(
            start=_instant(record.start_at),
            anchor=_instant(record.anchor),
            interval=Interval(record.billing_interval, int(record.interval_count)),
            timezone=record.timezone or "UTC",
        ),
    )


def subscription_changed(record, change_type: str) -> None:
    """A saved subscription change (chalicelib/outcomes.py): once it is
    canceled, its devices count no usage after the cancellation (their
    readings before it still reach its last invoice). Never raises into the
    change: a failure is logged and alarmed."""
    if change_type != "canceled" or not record.canceled_at:
        return
    try:
        store.end_subscription(record.merchant_id, record.subscription_id, _instant(record.canceled_at))
    except Exception:
        from chalicelib.observability import metrics

        logger.exception("devices not told of their subscription's cancellation",
                         extra={"subscription_id": record.subscription_id})
        metrics.add_metric(name="DeviceCancellationNotRecorded", unit="Count", value=1)


def attach_device(merchant_id: str, device_id: str, subscription_id: str) -> tuple[dict, bool]:
    """Attach (or move) a device to a subscription; (the device, whether it is new).

    A canceled subscription takes no device: its usage would never be billed."""
    record, attached = subscription_calendar(merchant_id, subscription_id)
    if record.status == "canceled":
        raise Conflict(f"subscription {subscription_id} is canceled", code="invalid_state")
    device, what = store.attach_device(merchant_id, device_id, attached, clock().now())
    shown = serialize(device, store.attachments(merchant_id, device_id))
    return shown, what == "created"


def get_device(merchant_id: str, device_id: str) -> dict:
    from chalicelib.services.ingest import DEVICE_ID

    if not DEVICE_ID.match(device_id or ""):
        raise NotFound(f"no device {device_id}")
    device = store.get_device(merchant_id, device_id)
    return serialize(device, store.attachments(merchant_id, device_id))


def customer_devices(merchant_id: str, customer_id: str) -> list[dict]:
    """The customer's devices now with their last readings, by id (the
    customer page): one Query of its devices and one BatchGetItem of them;
    without their attachment history (`GET /devices/{id}` has it)."""
    members = store.devices_of_customer(merchant_id, customer_id)
    if not members:
        return []
    found, _ = store.read_devices((merchant_id, m["device_id"]) for m in members)
    shown = []
    for pair in sorted(found):
        if found[pair].subscription.customer_id != customer_id:
            continue  # moved to another customer since the index was read
        device = serialize(found[pair], [])
        del device["attachments"]
        shown.append(device)
    return shown


def serialize(device: store.Device, attachments: list[store.Attachment]) -> dict:
    counters = device.counters
    return {
        "id": device.device_id,
        "object": "device",
        "device_id": device.device_id,
        "subscription_id": device.subscription_id,
        "customer_id": device.subscription.customer_id,
        "attached_at": device.attached_at,
        "created_at": device.created_at,
        # The last accepted reading of each counter (API.md).
        "counters": {
            meter: {"value": format(state.value, "f"), "seq": state.seq, "ts": _iso(state.ts)}
            for meter, state in sorted(counters.counters.items())
        },
        "last_reading": None
        if counters.last_seq is None
        else {"seq": counters.last_seq, "ts": _iso(counters.last_ts)},
        "late_readings": counters.out_of_order,
        "counter_resets": counters.resets,
        "attachments": [
            {"at": a.at, "subscription_id": a.subscription_id, "previous_subscription_id": a.previous_subscription_id}
            for a in attachments
        ],
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)
