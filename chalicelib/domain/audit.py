"""What one write changed, for the audit trail: from a record's image before
and after (DynamoDB's stream, NEW_AND_OLD_IMAGES), the action and the
attributes that changed, each with its value before and after.

Pure: images in, plain JSON-able values out. Which records are audited and
what their keys mean is the store's (store/audit.py); this says what of a
change is worth showing.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

CREATED, UPDATED, DELETED = "created", "updated", "deleted"

# Bookkeeping of every record: keys, index keys, optimistic-lock counters,
# the audit stamp itself. A write that moves only these changed nothing a
# person would want to read.
BOOKKEEPING = frozenset({
    "pk", "sk", "kind", "merchant_id", "version", "actor", "acted_at", "updated_at", "expires_at",
    "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "due_shard", "due_at", "card_expiry",
    # A digest of the Idempotency-Key that made an invoice or credit note change.
    "request",
})

# What else of an entity is not audited: a device's counters move with every
# reading (usage has its own trail, the readings); only its attachment is.
NOT_AUDITED = {
    "device": frozenset({"counters", "recent_seqs", "out_of_order", "resets", "last_seq", "last_ts",
                         "open_usage"}),
}

# What an entity keeps of the bookkeeping: an offer version's number is
# which version it is, not a lock counter.
KEPT = {
    "offer_version": frozenset({"version"}),
}

# An entry holds at most this much of before and after (an item is at most
# 400 KB, and it is written to the customer's timeline index as well); a
# larger value is named with its size instead.
MAX_ENTRY_BYTES = 64_000


@dataclass(frozen=True)
class Change:
    action: str
    before: dict[str, Any]
    after: dict[str, Any]


def change_of(entity_type: str, old_image: dict | None, new_image: dict | None) -> Change | None:
    """The change from `old_image` to `new_image` (DynamoDB attribute
    values), or None when no audited attribute moved."""
    ignored = (BOOKKEEPING - KEPT.get(entity_type, frozenset())) | NOT_AUDITED.get(entity_type, frozenset())
    if old_image is None and new_image is None:
        return None
    before = _audited(entity_type, old_image, ignored)
    after = _audited(entity_type, new_image, ignored)
    if old_image is None:
        return fit(Change(CREATED, {}, after))
    if new_image is None:
        return fit(Change(DELETED, before, {}))
    moved = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    if not moved:
        return None
    return fit(Change(UPDATED, {name: before.get(name) for name in moved}, {name: after.get(name) for name in moved}))


def _audited(entity_type: str, image: dict | None, ignored: frozenset[str]) -> dict[str, Any]:
    values = {name: shown(value) for name, value in (image or {}).items() if name not in ignored}
    if entity_type == "merchant" and isinstance(values.get("api_keys"), dict):
        # prefix -> hash of the key: the prefixes say which keys exist; the
        # hashes are nobody's business.
        values["api_keys"] = sorted(values["api_keys"])
    return {name: value for name, value in values.items() if value is not None}


def shown(value: dict) -> Any:
    """An attribute as the entry shows it; JSON kept as text (many records
    keep lines, attempts or terms so) is shown as what it holds."""
    plain_value = plain(value)
    if isinstance(plain_value, str) and plain_value[:1] in ("[", "{"):
        try:
            return json.loads(plain_value)
        except ValueError:
            return plain_value
    return plain_value


def plain(value: dict) -> Any:
    """A DynamoDB attribute value as a JSON value: numbers as integers when
    whole, else decimal strings (never floats)."""
    (kind, data), = value.items()
    if kind == "S":
        return data
    if kind == "N":
        return _number(data)
    if kind == "BOOL":
        return bool(data)
    if kind == "NULL":
        return None
    if kind == "M":
        return {name: plain(item) for name, item in sorted(data.items())}
    if kind == "L":
        return [plain(item) for item in data]
    if kind == "SS":
        return sorted(data)
    if kind == "NS":
        return sorted((_number(item) for item in data), key=Decimal)
    if kind == "B":
        return base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()
    if kind == "BS":
        return sorted(base64.b64encode(item if isinstance(item, bytes) else item.encode()).decode() for item in data)
    raise ValueError(f"unknown DynamoDB type {kind}")


def _number(text: str) -> int | str:
    number = Decimal(text)
    return int(number) if number == number.to_integral_value() else format(number.normalize(), "f")


def fit(change: Change, max_bytes: int = MAX_ENTRY_BYTES) -> Change:
    """`change` within `max_bytes` of JSON: the largest values, before or
    after, are replaced by `{"omitted_bytes": n}` until it fits."""
    sizes = sorted(((_size(value), side, name) for side, values in (("before", change.before), ("after", change.after))
                    for name, value in values.items()), reverse=True)
    total = sum(size for size, _, _ in sizes)
    if total <= max_bytes:
        return change
    sides = {"before": dict(change.before), "after": dict(change.after)}
    for size, side, name in sizes:
        if total <= max_bytes:
            break
        sides[side][name] = {"omitted_bytes": size}
        total -= size
    return Change(change.action, sides["before"], sides["after"])


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def instant_text(moment: datetime) -> str:
    """An instant as the audit stamp keeps it: ISO 8601 UTC with milliseconds,
    always the same width, so that the text sorts as the time does."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
