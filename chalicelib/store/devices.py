"""Devices: their attachment to a subscription and the state of their counters.

Records of the billing table (read and written with the low-level client,
see store/dynamo.py for why):

- `{merchant}#dev#{device_id}` / `device`: the device, and everything
  ingestion needs in ONE item: the attached subscription with its customer
  and what places a time in a billing period (anchor, interval, time zone:
  copied from the subscription at attach, so ingestion reads nothing else);
  the counters' last accepted readings (`counters`, `last_seq`, `last_ts`,
  `recent_seqs`, the counts of late readings and resets); the usage of the
  period of its latest reading (`open_usage`, see domain/counters.py); and
  `version`, which every write moves on conditionally (the exactly-once of
  ingestion: two writers that read the same state cannot both write).
  Hot fields are compact JSON of decimal strings: the item stays well under
  1 KB, so a reading costs one write unit. It carries no index attribute on
  purpose: a GSI would add a write to every reading.
- `{merchant}#dev#{device_id}` / `attach#{at}#{version}`: every attachment,
  oldest first (moving a device keeps its history).
- `{merchant}#dev#{device_id}` / `reset#{ts}#{seq}#{meter}`: counter resets,
  for operations; also in `gsi1` under `{merchant}#counter_resets` by time.
- `{merchant}#{subscription_id}#devices` / `{device_id}`: the devices
  attached to a subscription now (what `usage_for` reads the open usage
  from); also in `gsi1` under `{merchant}#{customer_id}#devices`.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import Decimal

from chalicelib.domain.counters import CounterReset, CounterState, DeviceCounters, OpenUsage
from chalicelib.domain.errors import Conflict, NotFound
from chalicelib.domain.periods import Interval
from chalicelib.domain.usage import UsageCalendar, parse_instant
from chalicelib.store import dynamo
from chalicelib.store.dynamo import integer, key, n, s, text
from chalicelib.store.usage_items import closed_usage_put, decode_meters, encode_meters

DEVICE_SK = "device"

# How many times a write that lost a race re-reads the device and tries again
# before the caller's retry (SQS, the client) takes over.
ATTEMPTS = 6


def device_pk(merchant_id: str, device_id: str) -> str:
    return f"{merchant_id}#dev#{device_id}"


def device_key(merchant_id: str, device_id: str) -> dict:
    return key(device_pk(merchant_id, device_id), DEVICE_SK)


def members_pk(merchant_id: str, subscription_id: str) -> str:
    return f"{merchant_id}#{subscription_id}#devices"


class StaleDevice(Exception):
    """The device changed since it was read (another writer won): read it again."""


@dataclass(frozen=True, slots=True)
class AttachedSubscription:
    """What a device copies from its subscription at attach: who pays, and
    what places a reading's time in a billing period."""

    subscription_id: str
    customer_id: str
    calendar: UsageCalendar


@dataclass(frozen=True, slots=True)
class Device:
    """A device as stored: its subscription, its counters, its open usage."""

    merchant_id: str
    device_id: str
    subscription: AttachedSubscription
    counters: DeviceCounters
    open_usage: OpenUsage | None
    version: int
    attached_at: str
    created_at: str

    @property
    def subscription_id(self) -> str:
        return self.subscription.subscription_id


@dataclass(frozen=True, slots=True)
class Attachment:
    at: str
    subscription_id: str
    customer_id: str
    previous_subscription_id: str | None


@dataclass(frozen=True, slots=True)
class ResetRecord:
    merchant_id: str
    device_id: str
    subscription_id: str
    meter: str
    seq: int
    ts: str
    previous: str
    value: str


# ---------------------------------------------------------------------------
# Encoding: the device item <-> Device


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _plain(value: Decimal) -> str:
    text_ = format(value, "f")
    return text_


def encode_counters(counters: DeviceCounters) -> dict:
    """The hot attributes of the device item for `counters`."""
    item = {
        "counters": s(
            json.dumps(
                {m: [_plain(c.value), c.seq, _iso(c.ts)] for m, c in counters.counters.items()},
                separators=(",", ":"),
            )
        ),
        "recent_seqs": s(" ".join(map(str, counters.recent_seqs))),
        "out_of_order": n(counters.out_of_order),
        "resets": n(counters.resets),
    }
    if counters.last_seq is not None:
        item["last_seq"] = n(counters.last_seq)
        item["last_ts"] = s(_iso(counters.last_ts))
    return item


def decode_counters(item: dict) -> DeviceCounters:
    raw = json.loads(text(item, "counters", "{}"))
    recent = text(item, "recent_seqs", "")
    last_ts = text(item, "last_ts")
    return DeviceCounters(
        counters={m: CounterState(Decimal(v), int(q), parse_instant(t)) for m, (v, q, t) in raw.items()},
        last_seq=integer(item, "last_seq"),
        last_ts=parse_instant(last_ts) if last_ts else None,
        recent_seqs=tuple(int(x) for x in recent.split()) if recent else (),
        out_of_order=integer(item, "out_of_order", 0),
        resets=integer(item, "resets", 0),
    )


def encode_open(open_usage: OpenUsage) -> str:
    return json.dumps(
        {
            "subscription_id": open_usage.subscription_id,
            "period_start": _iso(open_usage.period_start),
            "period_end": _iso(open_usage.period_end),
            "meters": encode_meters(open_usage.meters),
        },
        separators=(",", ":"),
    )


def decode_open(raw: str | None) -> OpenUsage | None:
    if not raw:
        return None
    data = json.loads(raw)
    return OpenUsage(
        data["subscription_id"],
        parse_instant(data["period_start"]),
        parse_instant(data["period_end"]),
        decode_meters(data["meters"]),
    )


def decode_device(item: dict) -> Device:
    return Device(
        merchant_id=text(item, "merchant_id"),
        device_id=text(item, "device_id"),
        subscription=AttachedSubscription(
            subscription_id=text(item, "subscription_id"),
            customer_id=text(item, "customer_id"),
            calendar=UsageCalendar(
                start=parse_instant(text(item, "start_at")),
                anchor=parse_instant(text(item, "anchor")),
                interval=Interval(text(item, "interval"), integer(item, "interval_count", 1)),
                timezone=text(item, "timezone", "UTC"),
                end=parse_instant(text(item, "ends_at")) if text(item, "ends_at") else None,
            ),
        ),
        counters=decode_counters(item),
        open_usage=decode_open(text(item, "open_usage")),
        version=integer(item, "version", 0),
        attached_at=text(item, "attached_at"),
        created_at=text(item, "created_at"),
    )


def _subscription_attributes(subscription: AttachedSubscription) -> dict:
    """What every attachment writes on the device (created, moved, its
    calendar refreshed): the subscription's copy, and the audit stamp of who
    attached it (a reading's write carries none: it is not audited)."""
    calendar = subscription.calendar
    return dynamo.stamped({
        "subscription_id": s(subscription.subscription_id),
        "customer_id": s(subscription.customer_id),
        "start_at": s(_iso(calendar.start)),
        "anchor": s(_iso(calendar.anchor)),
        "interval": s(calendar.interval.unit),
        "interval_count": n(calendar.interval.count),
        "timezone": s(calendar.timezone),
        # The subscription's cancellation: readings at or after it count no usage.
        **({"ends_at": s(_iso(calendar.end))} if calendar.end is not None else {}),
    })


# ---------------------------------------------------------------------------
# Reads


def read_devices(keys: Iterable[tuple[str, str]], *, consistent: bool = False) -> tuple[dict, set]:
    """The devices for (merchant_id, device_id) pairs, in BatchGetItem calls
    of 100: ({pair: Device} for those that exist, {pairs DynamoDB left
    unprocessed}). A pair in neither does not exist."""
    pairs = list(dict.fromkeys(keys))
    items, left = dynamo.batch_get((device_key(m, d) for m, d in pairs), consistent=consistent)
    found = {}
    for item in items:
        device = decode_device(item)
        found[(device.merchant_id, device.device_id)] = device
    unprocessed = set()
    for left_key in left:
        merchant_id, _, device_id = left_key["pk"]["S"].partition("#dev#")
        unprocessed.add((merchant_id, device_id))
    return found, unprocessed


def find_device(merchant_id: str, device_id: str, *, consistent: bool = True) -> Device | None:
    response = dynamo.client().get_item(
        TableName=dynamo.table_name(), Key=device_key(merchant_id, device_id), ConsistentRead=consistent
    )
    item = response.get("Item")
    return decode_device(item) if item else None


def get_device(merchant_id: str, device_id: str) -> Device:
    device = find_device(merchant_id, device_id)
    if device is None:
        raise NotFound(f"no device {device_id}")
    return device


def attachments(merchant_id: str, device_id: str) -> list[Attachment]:
    """The device's attachments, oldest first."""
    items = dynamo.query_all(
        KeyConditionExpression="pk = :pk AND begins_with(sk, :attach)",
        ExpressionAttributeValues={":pk": s(device_pk(merchant_id, device_id)), ":attach": s("attach#")},
        ConsistentRead=True,
    )
    return [
        Attachment(text(i, "at"), text(i, "subscription_id"), text(i, "customer_id"), text(i, "previous_subscription_id"))
        for i in items
    ]


def attached_devices(merchant_id: str, subscription_id: str) -> list[str]:
    """Ids of the devices attached to the subscription now."""
    items = dynamo.query_all(
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": s(members_pk(merchant_id, subscription_id))},
        ProjectionExpression="sk",
        ConsistentRead=True,
    )
    return [i["sk"]["S"] for i in items]


def devices_of_customer(merchant_id: str, customer_id: str) -> list[dict]:
    """The customer's devices now: [{"device_id", "subscription_id", "attached_at"}] (gsi1, eventually consistent)."""
    items = dynamo.query_all(
        IndexName="gsi1",
        KeyConditionExpression="gsi1pk = :pk",
        ExpressionAttributeValues={":pk": s(f"{merchant_id}#{customer_id}#devices")},
    )
    return [
        {"device_id": text(i, "device_id"), "subscription_id": text(i, "subscription_id"),
         "attached_at": text(i, "attached_at")}
        for i in items
    ]


def counter_resets(merchant_id: str, since: str = "") -> list[ResetRecord]:
    """Counter resets of the merchant's devices from `since` (ISO time), oldest first."""
    values = {":pk": s(f"{merchant_id}#counter_resets")}
    condition = "gsi1pk = :pk"
    if since:
        condition += " AND gsi1sk >= :since"
        values[":since"] = s(since)
    items = dynamo.query_all(IndexName="gsi1", KeyConditionExpression=condition, ExpressionAttributeValues=values)
    return [
        ResetRecord(text(i, "merchant_id"), text(i, "device_id"), text(i, "subscription_id"), text(i, "meter"),
                    integer(i, "seq"), text(i, "ts"), text(i, "previous"), text(i, "value"))
        for i in items
    ]


# ---------------------------------------------------------------------------
# Ingestion's write


def save_readings(
    device: Device,
    counters: DeviceCounters,
    open_usage: OpenUsage | None,
    closed: Sequence[OpenUsage] = (),
    resets: Sequence[CounterReset] = (),
) -> int:
    """Write a device's new counters and open usage, if it is still the
    version that was read; StaleDevice otherwise.

    Usually one UpdateItem. When the device left a period (`closed`: its
    usage of that period is final and goes to the subscription's usage
    record) or found resets, one TransactWriteItems of the device and those
    records, so the usage is in exactly one place at every instant: on the
    device while its period is open, in the subscription's record after.
    Returns the number of items written."""
    table = dynamo.table_name()
    values = {":v": n(device.version), ":nv": n(device.version + 1)}
    names = {}
    sets = ["#version = :nv"]
    names["#version"] = "version"
    for i, (name, value) in enumerate(encode_counters(counters).items()):
        names[f"#a{i}"] = name
        values[f":a{i}"] = value
        sets.append(f"#a{i} = :a{i}")
    expression = "SET " + ", ".join(sets)
    if open_usage is not None:
        values[":open"] = s(encode_open(open_usage))
        expression += ", open_usage = :open"
    else:
        expression += " REMOVE open_usage"
    update = {
        "TableName": table,
        "Key": device_key(device.merchant_id, device.device_id),
        "UpdateExpression": expression,
        "ConditionExpression": "#version = :v",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }
    others = [
        closed_usage_put(device.merchant_id, device.device_id, part, device.version) for part in closed
    ]
    others += [_reset_put(device, reset) for reset in resets]
    try:
        if not others:
            dynamo.client().update_item(**update)
        else:
            dynamo.client().transact_write_items(TransactItems=[{"Update": update}, *others])
    except Exception as error:  # botocore's ClientError, without importing botocore here
        if dynamo.is_condition_failure(error):
            raise StaleDevice(device.device_id) from error
        raise
    return 1 + len(others)


def _reset_put(device: Device, reset: CounterReset) -> dict:
    ts = _iso(reset.ts)
    return {
        "Put": {
            "TableName": dynamo.table_name(),
            "Item": {
                **key(device_pk(device.merchant_id, device.device_id), f"reset#{ts}#{reset.seq}#{reset.meter}"),
                "gsi1pk": s(f"{device.merchant_id}#counter_resets"),
                "gsi1sk": s(f"{ts}#{device.device_id}#{reset.meter}"),
                "merchant_id": s(device.merchant_id),
                "device_id": s(device.device_id),
                "subscription_id": s(device.subscription_id),
                "meter": s(reset.meter),
                "seq": n(reset.seq),
                "ts": s(ts),
                "previous": s(_plain(reset.previous)),
                "value": s(_plain(reset.value)),
            },
        }
    }


# ---------------------------------------------------------------------------
# Attaching


def attach_device(merchant_id: str, device_id: str, subscription: AttachedSubscription, at: datetime) -> tuple[Device, str]:
    """Attach a device to a subscription; returns (the device, what happened:
    "created", "moved", "unchanged" or "updated").

    A new device starts with no counters (its first reading is the
    baseline). Moving a device keeps its counters (its next reading counts
    from its last one, for the new subscription), closes its open usage
    into the old subscription's record, moves its membership and adds to
    its history, in one transaction. Attaching again to the same
    subscription changes nothing, except refreshing the copied calendar if
    the subscription's changed."""
    at = at.replace(microsecond=0)  # history keys sort as text: one format
    for _ in range(ATTEMPTS):
        device = find_device(merchant_id, device_id)
        try:
            if device is None:
                return _create(merchant_id, device_id, subscription, at), "created"
            if device.subscription_id == subscription.subscription_id:
                if device.subscription == subscription:
                    return device, "unchanged"
                return _refresh(device, subscription), "updated"
            return _move(device, subscription, at), "moved"
        except StaleDevice:
            continue
    raise Conflict("the device is changing right now (readings arriving); retry", code="version_conflict")


def _membership_put(merchant_id: str, device_id: str, subscription: AttachedSubscription, at: str) -> dict:
    return {
        "Put": {
            "TableName": dynamo.table_name(),
            "Item": {
                **key(members_pk(merchant_id, subscription.subscription_id), device_id),
                "gsi1pk": s(f"{merchant_id}#{subscription.customer_id}#devices"),
                "gsi1sk": s(device_id),
                "merchant_id": s(merchant_id),
                "device_id": s(device_id),
                "subscription_id": s(subscription.subscription_id),
                "attached_at": s(at),
            },
        }
    }


def _history_put(merchant_id: str, device_id: str, subscription: AttachedSubscription, at: str, version: int,
                 previous: str | None) -> dict:
    item = {
        **key(device_pk(merchant_id, device_id), f"attach#{at}#{version:012d}"),
        "at": s(at),
        "subscription_id": s(subscription.subscription_id),
        "customer_id": s(subscription.customer_id),
    }
    if previous:
        item["previous_subscription_id"] = s(previous)
    return {"Put": {"TableName": dynamo.table_name(), "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}


def _transact(items: list[dict]) -> None:
    try:
        dynamo.client().transact_write_items(TransactItems=items)
    except Exception as error:
        if dynamo.is_condition_failure(error):
            raise StaleDevice() from error
        raise


def _create(merchant_id: str, device_id: str, subscription: AttachedSubscription, at: datetime) -> Device:
    now = _iso(at)
    item = {
        **device_key(merchant_id, device_id),
        "merchant_id": s(merchant_id),
        "device_id": s(device_id),
        **_subscription_attributes(subscription),
        **encode_counters(DeviceCounters()),
        "attached_at": s(now),
        "created_at": s(now),
        "version": n(1),
    }
    _transact(
        [
            {"Put": {"TableName": dynamo.table_name(), "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}},
            _membership_put(merchant_id, device_id, subscription, now),
            _history_put(merchant_id, device_id, subscription, now, 1, None),
        ]
    )
    return decode_device(item)


def _refresh(device: Device, subscription: AttachedSubscription) -> Device:
    attributes = _subscription_attributes(subscription)
    names = {f"#a{i}": name for i, name in enumerate(attributes)}
    values = {f":a{i}": value for i, value in enumerate(attributes.values())}
    _update_device(device, "SET " + ", ".join(f"#a{i} = :a{i}" for i in range(len(attributes))), names, values)
    return find_device(device.merchant_id, device.device_id)


def end_subscription(merchant_id: str, subscription_id: str, at: datetime) -> int:
    """The subscription was canceled at `at`: its devices still attached
    keep their counters moving, and count no usage from then on. Returns how
    many devices it marked."""
    marked = 0
    for device_id in attached_devices(merchant_id, subscription_id):
        for _ in range(5):
            device = find_device(merchant_id, device_id)
            if device is None or device.subscription_id != subscription_id or device.subscription.calendar.end:
                break
            calendar = replace(device.subscription.calendar, end=at)
            try:
                _refresh(device, replace(device.subscription, calendar=calendar))
                marked += 1
                break
            except StaleDevice:
                continue
    return marked


def _update_device(device: Device, expression: str, names: dict, values: dict) -> None:
    try:
        dynamo.client().update_item(
            TableName=dynamo.table_name(),
            Key=device_key(device.merchant_id, device.device_id),
            UpdateExpression=expression + ", #version = :nv",
            ConditionExpression="#version = :v",
            ExpressionAttributeNames={**names, "#version": "version"},
            ExpressionAttributeValues={**values, ":v": n(device.version), ":nv": n(device.version + 1)},
        )
    except Exception as error:
        if dynamo.is_condition_failure(error):
            raise StaleDevice(device.device_id) from error
        raise


def _move(device: Device, subscription: AttachedSubscription, at: datetime) -> Device:
    now = _iso(at)
    attributes = {**_subscription_attributes(subscription), "attached_at": s(now)}
    names = {f"#a{i}": name for i, name in enumerate(attributes)}
    values = {f":a{i}": value for i, value in enumerate(attributes.values())}
    names["#version"] = "version"
    values.update({":v": n(device.version), ":nv": n(device.version + 1)})
    items = [
        {
            "Update": {
                "TableName": dynamo.table_name(),
                "Key": device_key(device.merchant_id, device.device_id),
                "UpdateExpression": "SET " + ", ".join(f"#a{i} = :a{i}" for i in range(len(attributes)))
                + ", #version = :nv REMOVE open_usage",
                "ConditionExpression": "#version = :v",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        },
        {"Delete": {"TableName": dynamo.table_name(),
                    "Key": key(members_pk(device.merchant_id, device.subscription_id), device.device_id)}},
        _membership_put(device.merchant_id, device.device_id, subscription, now),
        _history_put(device.merchant_id, device.device_id, subscription, now, device.version + 1,
                     device.subscription_id),
    ]
    if device.open_usage is not None and device.open_usage.meters:
        items.append(closed_usage_put(device.merchant_id, device.device_id, device.open_usage, device.version))
    _transact(items)
    return find_device(device.merchant_id, device.device_id)
