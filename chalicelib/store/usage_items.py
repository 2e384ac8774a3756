"""The items of a subscription's usage records, written by two stores:
their keys, and the encoding of a period's tallies (store/usage.py reads
and writes them; store/devices.py writes a device's closed usage in the
transaction that moves the device on). One home, so that neither store
imports the other.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal

from chalicelib.domain.counters import OpenUsage
from chalicelib.domain.usage import UsageTally, parse_instant
from chalicelib.store import dynamo
from chalicelib.store.dynamo import key, n, s


def usage_pk(merchant_id: str, subscription_id: str) -> str:
    return f"{merchant_id}#{subscription_id}#usage"


def period_sk(period_start: datetime | str) -> str:
    return f"period#{iso(period_start)}"


def iso(moment: datetime | str) -> str:
    if isinstance(moment, str):
        moment = parse_instant(moment)
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def closed_usage_put(merchant_id: str, device_id: str, part: OpenUsage, device_version: int) -> dict:
    """The TransactWriteItems Put of a device's final usage of a period, for
    the transaction that moves the device past `device_version`."""
    period = iso(part.period_start)
    return {
        "Put": {
            "TableName": dynamo.table_name(),
            "Item": {
                **key(
                    usage_pk(merchant_id, part.subscription_id),
                    f"period#{period}#dev#{device_id}#{device_version:012d}",
                ),
                "merchant_id": s(merchant_id),
                "subscription_id": s(part.subscription_id),
                "period_start": s(period),
                "device_id": s(device_id),
                "device_version": n(device_version),
                "meters": s(json.dumps(encode_meters(part.meters), separators=(",", ":"))),
            },
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }


def encode_meters(meters: Mapping[str, UsageTally]) -> dict:
    """Meter -> [total, maximum, last, last_at]: decimal strings and an ISO
    time, as compact as JSON gets (the device item must stay under 1 KB)."""
    return {
        m: [
            format(t.total, "f"),
            None if t.maximum is None else format(t.maximum, "f"),
            None if t.last is None else format(t.last, "f"),
            None if t.last_at is None else iso(t.last_at),
        ]
        for m, t in meters.items()
    }


def decode_meters(raw: Mapping) -> dict[str, UsageTally]:
    return {
        m: UsageTally(
            Decimal(total),
            None if maximum is None else Decimal(maximum),
            None if last is None else Decimal(last),
            None if last_at is None else parse_instant(last_at),
        )
        for m, (total, maximum, last, last_at) in raw.items()
    }
