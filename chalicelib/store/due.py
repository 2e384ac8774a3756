"""The `due` index: what becomes due, and when, for the scheduled runs.

One home for its key layout and its one query. An item that something must
happen to at a time carries `due_shard` (`due#<n>`, a stable hash of its
entity id over `BILLING_SHARDS`) and `due_at` (UTC to the second, one fixed
width, so strings compare like instants); it leaves the index by dropping
both. Its kind is the item's `sk`:
- `subscription`: its next billing (a boundary or an invoice queued now);
- `invoice`: its next payment attempt, or the end of an attempt's lease;
- `alert`, `alert_digest`: an e-mail still to send.
- `webhook_delivery`: a webhook attempt owed, or the end of one's lease.

The index projects keys only: the runs read the shards in parallel, and the
worker that handles an entry reads the item itself, consistently.
"""
from __future__ import annotations

import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from chalicelib.config import settings

INDEX = "due"
# Shards read at once by a run (each one Query, paginated).
PARALLEL_SHARDS = 8


def due_key(moment: datetime) -> str:
    """A `due_at` value: UTC to the whole second, one fixed width, so that
    strings compare like the instants they stand for."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def due_shard_of(entity_id: str) -> str:
    """`due#<n>`: the shard of an entity, stable across processes (crc32,
    not Python's salted hash)."""
    return f"due#{zlib.crc32(entity_id.encode()) % settings().billing_shards}"


def due_items(now: datetime, kinds: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(pk, sk, due_at) of the items of `kinds` (their sk) due by `now`,
    oldest first, every shard read in parallel."""
    from chalicelib.store import dynamo

    until = due_key(now)
    names = {f":kind{i}": dynamo.s(kind) for i, kind in enumerate(kinds)}

    def shard(n: int) -> list[tuple[str, str, str]]:
        items = dynamo.query_all(
            IndexName=INDEX,
            KeyConditionExpression="due_shard = :shard AND due_at <= :until",
            FilterExpression=f"sk IN ({', '.join(names)})",
            ExpressionAttributeValues={":shard": dynamo.s(f"due#{n}"), ":until": dynamo.s(until), **names},
        )
        return [(item["pk"]["S"], item["sk"]["S"], item["due_at"]["S"]) for item in items]

    with ThreadPoolExecutor(max_workers=PARALLEL_SHARDS) as pool:
        found = [item for part in pool.map(shard, range(settings().billing_shards)) for item in part]
    return sorted(found, key=lambda item: item[2])
