"""The audit trail: who changed what, when, from what to what.

Every write of an audited record carries its actor and time (the store
stamps it: store/base.py `AuditedRecord`, store/dynamo.py `stamped`, from
chalicelib.actor). The billing table's stream holds each change with the
item before and after; `change_feed` (app.py, its own function beside
`report_feed`) turns each change of an audited record into one entry: the
action (created, updated, deleted), the actor, the time and, of the
attributes that changed (domain/audit.py: no keys, counters or stamps),
their values before and after.

- Nothing is missed: the stream is written by DynamoDB with the change,
  whoever made it (API, console, billing run, webhook, ingestion).
- Nothing is written twice: an entry's key is its stream record's time stamp
  and sequence number, put only if absent; a redelivered record finds it.
- One failing record holds back only the records after it in its shard, and
  only in this feed: the report figures go on (report_feed reads the same
  stream with its own iterator).

`GET /audit?entity_id=` reads an entity's entries, `GET /audit?customer_id=`
the customer's timeline (the customer and everything it has), newest first.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime, timezone

from chalicelib.actor import SYSTEM, job_actor
from chalicelib.clock import parse_instant
from chalicelib.domain import audit as domain
from chalicelib.domain.errors import InvalidRequest
from chalicelib.ids import derived_id
from chalicelib.observability import logger, metrics
from chalicelib.store import audit as store

# DynamoDB deletes an expired item itself (TTL): the stream names the service.
TTL_PRINCIPAL = "dynamodb.amazonaws.com"
# An id of this API, a device's id or a member's e-mail: bounded, printable.
ENTITY_ID = re.compile(r"^[^\s#\x00-\x1f\x7f]{1,320}$")


def feed_audit(records: Iterable[dict]) -> list[str]:
    """Write the entries of a batch of stream records (Lambda's `Records`).
    Returns the sequence numbers that failed: only the first, as the stream
    retries from it on (the entries before it are written; those after it
    are retried and find theirs)."""
    for record in records:
        try:
            record_change(record)
        except Exception:  # this record is retried by the stream; the others wait behind it
            logger.exception("audit entry not written; the stream will retry", extra={"event_id": record.get("eventID")})
            metrics.add_metric(name="AuditFeedFailed", unit="Count", value=1)
            return [record["dynamodb"]["SequenceNumber"]]
    return []


def record_change(record: dict) -> bool:
    """The entry of one stream record. False when the record is not audited,
    changed nothing audited, or has its entry already."""
    change = record.get("dynamodb", {})
    keys = change.get("Keys", {})
    entity = store.entity_of(keys.get("pk", {}).get("S", ""), keys.get("sk", {}).get("S", ""))
    if entity is None:
        return False
    old, new = change.get("OldImage"), change.get("NewImage")
    diff = domain.change_of(entity.entity_type, old, new)
    if diff is None:
        return False
    image = new if new is not None else old
    actor, at = _text(image, "actor") or SYSTEM, _text(image, "acted_at")
    if record.get("userIdentity", {}).get("principalId") == TTL_PRINCIPAL:
        actor, at = job_actor("ttl"), None
    if at is None:
        at = domain.instant_text(_stream_time(change))
    customer_id = entity.entity_id if entity.entity_type == "customer" else _text(image, "customer_id")
    sequence = change["SequenceNumber"]
    entry = store.AuditEntryRecord(
        *store.AuditEntryRecord.key(entity.merchant_id, entity.entity_id, at, sequence),
        merchant_id=entity.merchant_id,
        entry_id=derived_id("aud", parse_instant(at), f"{record.get('eventID')}|{sequence}"),
        entity_type=entity.entity_type,
        entity_id=entity.entity_id,
        customer_id=customer_id,
        action=diff.action,
        actor=actor,
        at=at,
        before=_json(diff.before),
        after=_json(diff.after),
    )
    return store.record_entry(entry)


def _text(image: dict | None, name: str) -> str | None:
    value = (image or {}).get(name)
    return value.get("S") if isinstance(value, dict) else None


def _stream_time(change: dict) -> datetime:
    """When DynamoDB wrote a record that carries no stamp (epoch seconds)."""
    seconds = change.get("ApproximateCreationDateTime")
    if isinstance(seconds, datetime):  # boto3 parses it when the records are read with it
        return seconds
    return datetime.fromtimestamp(float(seconds or 0), timezone.utc)


def _json(values: dict) -> str:
    return json.dumps(values, separators=(",", ":"), sort_keys=True)


# ---------------------------------------------------------------------------
# Reads


def entity_history(merchant_id: str, entity_id: str, limit: int, cursor: str | None = None,
                   customer_id: str | None = None) -> tuple[list[dict], str | None]:
    """An entity's entries, newest first (another merchant's entity has none)."""
    _check_id(entity_id, "entity_id")
    if customer_id is not None:
        _check_id(customer_id, "customer_id")
    entries, next_cursor = store.entity_history(merchant_id, entity_id, limit=limit, cursor=cursor,
                                                customer_id=customer_id)
    return [serialize(entry) for entry in entries], next_cursor


def customer_timeline(merchant_id: str, customer_id: str, limit: int,
                      cursor: str | None = None) -> tuple[list[dict], str | None]:
    """The entries of a customer and of everything it has, newest first."""
    _check_id(customer_id, "customer_id")
    entries, next_cursor = store.customer_timeline(merchant_id, customer_id, limit=limit, cursor=cursor)
    return [serialize(entry) for entry in entries], next_cursor


def trail(merchant_id: str, *, entity_id: str | None, customer_id: str | None, limit: int,
          cursor: str | None = None) -> tuple[list[dict], str | None]:
    """`GET /audit`: an entity's entries (of that customer's only, when both
    are given), or a customer's timeline."""
    if entity_id is not None:
        return entity_history(merchant_id, entity_id, limit, cursor, customer_id=customer_id)
    if customer_id is not None:
        return customer_timeline(merchant_id, customer_id, limit, cursor)
    raise InvalidRequest("give entity_id (one object's changes) or customer_id (a customer's timeline)",
                         param="entity_id")


def _check_id(value: str, param: str) -> None:
    if not ENTITY_ID.match(value):
        raise InvalidRequest(f"{param} must be 1 to 320 printable characters, without '#'", param=param)


def serialize(entry: store.AuditEntryRecord) -> dict:
    return {
        "id": entry.entry_id,
        "object": "audit_entry",
        "entity_type": entry.entity_type,
        "entity_id": entry.entity_id,
        "customer_id": entry.customer_id,
        "action": entry.action,
        "actor": entry.actor,
        "at": entry.at,
        "before": json.loads(entry.before),
        "after": json.loads(entry.after),
    }
