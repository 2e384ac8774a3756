"""Usage per subscription, meter and billing period.

`usage_for` is the one function rating reads usage through: per meter, the
sum, the largest quantity and the last one of the period (as
`MeterUsage(total, maximum, last)`), billed or not.

Where a period's usage lives (billing table, low-level client, see
store/dynamo.py):

- `{merchant}#{subscription_id}#usage` / `period#{period_start}`: the
  period's usage from `POST /usage` events (`events`: meter -> tally, JSON
  of decimal strings; `last_events`: meter -> the event that is its last;
  `events_version` for optimistic locking);
- `{merchant}#{subscription_id}#usage` / `period#{period_start}#dev#{device_id}#{n}`:
  a device's usage of a period it has left (final: the device's later
  readings are all newer), written in the same transaction that moves the
  device on (`n` = the device's version then);
- the device item itself (store/devices.py, `open_usage`): the usage of the
  period of the device's latest reading, while that period is open.

Why a device holds its open period: the reading that brings usage must
update the device anyway (its counters), so the usage rides on that one
write (one write unit per reading); a shared per-subscription total would
be a second write per reading and a hot item for a subscription with many
machines. The price is paid at read time, once per period per subscription:
`usage_for` reads the subscription's devices (one Query, one BatchGetItem)
besides its usage records (one Query).

Reading without a transaction stays exact because a device's usage moves
from its item to a record (`period#...#dev#...#{n}`) only in one
transaction that also moves the device past version `n`: the devices are
read first, then the records; a device's open usage is left out when a
record of the same device and period with `n` at least the version read
exists (it was moved there after the device was read).

Late usage: usage of a period that an invoice already billed keeps
accumulating here (nothing is ever reset). The billing run compares
`usage_before(...)` (every earlier period's usage now) with what it billed
(store/invoices.py, `billed#{period_start}`): the difference is late usage,
billed on the next invoice on its own line.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from chalicelib.domain.counters import OpenUsage
from chalicelib.domain.rating import MeterUsage
from chalicelib.domain.usage import EventTally, UsageTally, merge_meters, meter_usages, parse_instant
from chalicelib.store import dynamo
from chalicelib.store.dynamo import integer, key, n, s, text
from chalicelib.store.usage_items import (  # noqa: F401  (decode_meters: read by the reports too)
    decode_meters, encode_meters, iso as _iso, period_sk, usage_pk,
)


class UsageUnavailable(Exception):
    """DynamoDB did not answer every read: the usage cannot be told exactly (retry)."""


class StaleUsage(Exception):
    """Usage records changed since they were read (another request won): read again."""


def event_pk(merchant_id: str, event_id: str) -> str:
    return f"{merchant_id}#usage_event#{event_id}"


# ---------------------------------------------------------------------------
# Reading a period's usage


def usage_for(merchant_id: str, subscription_id: str, period_start: datetime | str) -> dict[str, MeterUsage]:
    """The aggregated usage of each meter in the billing period that starts at
    `period_start` (an aware datetime, or ISO 8601 in UTC with `Z`), keyed by
    meter, billed or not. Meters no component prices are included (rating
    ignores them). Raises UsageUnavailable when a read was left unanswered."""
    return meter_usages(period_tallies(merchant_id, subscription_id, period_start))


def period_tallies(merchant_id: str, subscription_id: str, period_start: datetime | str) -> dict[str, UsageTally]:
    """`usage_for` with the time of each meter's last quantity (for the API)."""
    prefix = period_sk(period_start)
    devices = _open_usage_by_device(merchant_id, subscription_id)
    items = dynamo.query_all(
        KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
        ExpressionAttributeValues={":pk": s(usage_pk(merchant_id, subscription_id)), ":prefix": s(prefix)},
        ConsistentRead=True,
    )
    items = [i for i in items if i["sk"]["S"] == prefix or i["sk"]["S"].startswith(prefix + "#")]
    by_period = _combine(subscription_id, items, devices, lambda p: _iso(p) == prefix[len("period#"):])
    return by_period.get(prefix[len("period#"):], {})


def usage_before(merchant_id: str, subscription_id: str, before: datetime | str) -> dict[str, dict[str, MeterUsage]]:
    """The usage now of every period that starts before `before`: period
    start (ISO, `Z`) -> meter -> MeterUsage. Periods with no usage are absent.

    What the billing run compares with the usage it billed per period, to
    find late usage. Three reads whatever the subscription's age (two
    Queries and one BatchGetItem per 100 devices)."""
    bound = period_sk(before)
    devices = _open_usage_by_device(merchant_id, subscription_id)
    items = dynamo.query_all(
        KeyConditionExpression="pk = :pk AND sk < :bound",
        ExpressionAttributeValues={":pk": s(usage_pk(merchant_id, subscription_id)), ":bound": s(bound)},
        ConsistentRead=True,
    )
    limit = parse_instant(bound[len("period#"):])
    by_period = _combine(subscription_id, items, devices, lambda p: p < limit)
    return {period: meter_usages(meters) for period, meters in sorted(by_period.items())}


def _open_usage_by_device(merchant_id: str, subscription_id: str) -> dict[str, tuple[int, OpenUsage | None]]:
    """device id -> (its version, its open usage) for the devices attached now, read consistently."""
    from chalicelib.store import devices as device_store

    ids = device_store.attached_devices(merchant_id, subscription_id)
    if not ids:
        return {}
    found, unprocessed = device_store.read_devices(((merchant_id, d) for d in ids), consistent=True)
    if unprocessed:
        raise UsageUnavailable(f"{len(unprocessed)} device(s) of {subscription_id} could not be read")
    return {device_id: (device.version, device.open_usage) for (_, device_id), device in found.items()}


def _combine(subscription_id: str, items: list[dict], devices: Mapping, wanted) -> dict[str, dict[str, UsageTally]]:
    """Per period (ISO start), per meter: events + closed device usage + the
    devices' open usage not yet moved to a record."""
    parts: dict[str, list[Mapping[str, UsageTally]]] = {}
    closed_versions: dict[tuple[str, str], int] = {}
    for item in items:
        sk = item["sk"]["S"]
        period, _, rest = sk[len("period#"):].partition("#")
        if not rest:
            parts.setdefault(period, []).append(
                {m: t.tally for m, t in _decode_event_tallies(text(item, "events")).items()}
            )
        else:
            parts.setdefault(period, []).append(decode_meters(json.loads(text(item, "meters", "{}"))))
            device_id, version = text(item, "device_id"), integer(item, "device_version", 0)
            pair = (device_id, period)
            closed_versions[pair] = max(version, closed_versions.get(pair, -1))
    for device_id, (version, open_usage) in devices.items():
        if open_usage is None or open_usage.subscription_id != subscription_id or not wanted(open_usage.period_start):
            continue
        period = _iso(open_usage.period_start)
        if closed_versions.get((device_id, period), -1) >= version:
            continue  # moved to its record after the device was read: counted there
        parts.setdefault(period, []).append(open_usage.meters)
    return {period: merge_meters(*sources) for period, sources in parts.items()}


# ---------------------------------------------------------------------------
# A device's usage of a period it has left


def closed_device_usage(merchant_id: str, subscription_id: str, period_start: datetime | str, device_id: str,
                        version: int) -> dict[str, UsageTally]:
    """The usage a device moved to its record when it left a period at
    `version` (empty if there is no such record)."""
    sk = f"{period_sk(period_start)}#dev#{device_id}#{version:012d}"
    item = dynamo.client().get_item(
        TableName=dynamo.table_name(), Key=key(usage_pk(merchant_id, subscription_id), sk), ConsistentRead=True,
    ).get("Item")
    if item is None:
        return {}
    return decode_meters(json.loads(item["meters"]["S"]))


# ---------------------------------------------------------------------------
# POST /usage events


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One event of `POST /usage`, as recorded (forever: its id is unique per
    merchant). `net_quantity` is the quantity with its corrections applied
    (for an event that is not itself a correction)."""

    event_id: str
    subscription_id: str
    meter: str
    quantity: Decimal
    timestamp: datetime
    period_start: datetime
    corrects: str | None
    net_quantity: Decimal
    received_at: str
    version: int = 1


@dataclass(frozen=True, slots=True)
class PeriodEvents:
    """The events part of a period's usage record, as read (`version` 0: no record yet)."""

    subscription_id: str
    period_start: datetime
    meters: Mapping[str, EventTally]
    version: int = 0


def _encode_event_tallies(meters: Mapping[str, EventTally]) -> str:
    tallies = encode_meters({m: t.tally for m, t in meters.items()})
    return json.dumps({m: [*tallies[m], t.last_event] for m, t in meters.items()}, separators=(",", ":"))


def _decode_event_tallies(raw: str | None) -> dict[str, EventTally]:
    data = json.loads(raw or "{}")
    tallies = decode_meters({m: values[:4] for m, values in data.items()})
    return {m: EventTally(tallies[m], values[4]) for m, values in data.items()}


def read_events(merchant_id: str, event_ids: Iterable[str]) -> dict[str, UsageEvent]:
    """The recorded events among `event_ids` (consistent reads)."""
    ids = list(dict.fromkeys(event_ids))
    items, left = dynamo.batch_get((key(event_pk(merchant_id, e), "usage_event") for e in ids), consistent=True)
    if left:
        raise UsageUnavailable(f"{len(left)} usage event(s) could not be read")
    return {text(i, "event_id"): _decode_event(i) for i in items}


def _decode_event(item: dict) -> UsageEvent:
    return UsageEvent(
        event_id=text(item, "event_id"),
        subscription_id=text(item, "subscription_id"),
        meter=text(item, "meter"),
        quantity=Decimal(text(item, "quantity")),
        timestamp=parse_instant(text(item, "timestamp")),
        period_start=parse_instant(text(item, "period_start")),
        corrects=text(item, "corrects"),
        net_quantity=Decimal(text(item, "net_quantity", text(item, "quantity"))),
        received_at=text(item, "received_at"),
        version=integer(item, "version", 1),
    )


def read_period_events(merchant_id: str, periods: Iterable[tuple[str, datetime]]) -> dict[tuple[str, datetime], PeriodEvents]:
    """The events part of each (subscription, period start)'s usage record (consistent reads)."""
    wanted = list(dict.fromkeys(periods))
    keys = [key(usage_pk(merchant_id, sub), period_sk(start)) for sub, start in wanted]
    items, left = dynamo.batch_get(keys, consistent=True, projection="pk, sk, events, events_version")
    if left:
        raise UsageUnavailable(f"{len(left)} usage record(s) could not be read")
    found = {(i["pk"]["S"], i["sk"]["S"]): i for i in items}
    result = {}
    for sub, start in wanted:
        item = found.get((usage_pk(merchant_id, sub), period_sk(start)))
        if item is None:
            result[(sub, start)] = PeriodEvents(sub, start, {}, 0)
        else:
            result[(sub, start)] = PeriodEvents(
                sub, start, _decode_event_tallies(text(item, "events")), integer(item, "events_version", 0)
            )
    return result


def write_events(
    merchant_id: str,
    events: Iterable[UsageEvent],
    periods: Iterable[tuple[PeriodEvents, Mapping[str, EventTally]]],
    corrected: Iterable[tuple[UsageEvent, Decimal]] = (),
) -> None:
    """Record new events and their periods' new tallies in one transaction
    (at most 100 items): each event only if its id was never used, each
    period only if still at the version read, each corrected event only if
    unchanged. StaleUsage when any of them lost a race (nothing written)."""
    table = dynamo.table_name()
    items = []
    for event in events:
        item = {
            **key(event_pk(merchant_id, event.event_id), "usage_event"),
            "merchant_id": s(merchant_id),
            "event_id": s(event.event_id),
            "subscription_id": s(event.subscription_id),
            "meter": s(event.meter),
            "quantity": s(format(event.quantity, "f")),
            "timestamp": s(_iso(event.timestamp)),
            "period_start": s(_iso(event.period_start)),
            "net_quantity": s(format(event.net_quantity, "f")),
            "received_at": s(event.received_at),
            "version": n(event.version),
        }
        if event.corrects:
            item["corrects"] = s(event.corrects)
        items.append({"Put": {"TableName": table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}})
    for before, meters in periods:
        condition = "attribute_not_exists(events_version)" if before.version == 0 else "events_version = :v"
        values = {
            ":events": s(_encode_event_tallies(meters)),
            ":nv": n(before.version + 1),
            ":m": s(merchant_id),
            ":sub": s(before.subscription_id),
            ":p": s(_iso(before.period_start)),
        }
        if before.version:
            values[":v"] = n(before.version)
        items.append(
            {
                "Update": {
                    "TableName": table,
                    "Key": key(usage_pk(merchant_id, before.subscription_id), period_sk(before.period_start)),
                    "UpdateExpression": "SET events = :events, events_version = :nv, merchant_id = :m, "
                    "subscription_id = :sub, period_start = :p",
                    "ConditionExpression": condition,
                    "ExpressionAttributeValues": values,
                }
            }
        )
    for event, net in corrected:
        items.append(
            {
                "Update": {
                    "TableName": table,
                    "Key": key(event_pk(merchant_id, event.event_id), "usage_event"),
                    "UpdateExpression": "SET net_quantity = :net, #version = :nv",
                    "ConditionExpression": "#version = :v",
                    "ExpressionAttributeNames": {"#version": "version"},
                    "ExpressionAttributeValues": {
                        ":net": s(format(net, "f")),
                        ":v": n(event.version),
                        ":nv": n(event.version + 1),
                    },
                }
            }
        )
    if not items:
        return
    if len(items) > 100:
        raise ValueError("a transaction holds at most 100 items")
    try:
        dynamo.client().transact_write_items(TransactItems=items)
    except Exception as error:
        if dynamo.is_condition_failure(error):
            raise StaleUsage() from error
        raise
