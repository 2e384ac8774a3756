"""The low-level DynamoDB client, for the records whose cost is per reading.

Devices and usage are read and written with botocore's client and plain
attribute values rather than PynamoDB models: ingestion is the hottest path
of the system (every reading of every machine), its items are built and
parsed by hand in a few microseconds, and its writes compose into one
transaction with other records (a device moved with its history and its
usage). Everything here still goes through the billing table of the
template, with the same key conventions (every key starts with the merchant).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chalicelib import aws
from chalicelib.actor import current_actor
from chalicelib.clock import clock
from chalicelib.config import settings
from chalicelib.domain.audit import instant_text


def client():
    """The DynamoDB client (chalicelib.aws)."""
    return aws.client("dynamodb")


def table_name() -> str:
    return settings().table_name


def s(value: str) -> dict:
    return {"S": value}


def n(value: int) -> dict:
    return {"N": str(value)}


def key(pk: str, sk: str) -> dict:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def audit_stamp() -> dict[str, str]:
    """Who writes now, and when: what every write of an audited record
    carries (`actor`, `acted_at`), for the audit feed to read back from the
    table's stream (services/audit.py)."""
    return {"actor": current_actor(), "acted_at": instant_text(clock().now())}


def stamped(attributes: dict) -> dict:
    """`attributes` (attribute values of an item or of a SET) with the audit stamp."""
    return {**attributes, **{name: s(value) for name, value in audit_stamp().items()}}


def text(item: dict, name: str, default: str | None = None) -> str | None:
    value = item.get(name)
    return value["S"] if value is not None and "S" in value else default


def integer(item: dict, name: str, default: int | None = None) -> int | None:
    value = item.get(name)
    return int(value["N"]) if value is not None and "N" in value else default


def error_code(error: Exception) -> str | None:
    response = getattr(error, "response", None) or {}
    return response.get("Error", {}).get("Code")


def cancellation_codes(error: Exception) -> list[str | None]:
    """The per-item reasons of a cancelled TransactWriteItems, in the order of its items."""
    response = getattr(error, "response", None) or {}
    return [reason.get("Code") for reason in response.get("CancellationReasons", [])]


def is_condition_failure(error: Exception) -> bool:
    """A condition of ours refused the write, or a transaction lost a race:
    in both cases what was read is out of date."""
    code = error_code(error)
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        codes = set(cancellation_codes(error)) - {None, "None"}
        return bool(codes) and codes <= {"ConditionalCheckFailed", "TransactionConflict"}
    return code == "TransactionConflictException"


def batch_get(keys: Iterable[dict], *, consistent: bool = False, projection: str | None = None,
              names: dict | None = None) -> tuple[list[dict], list[dict]]:
    """Items for up to any number of keys, 100 per BatchGetItem, retrying
    what DynamoDB left unprocessed a few times.

    Returns (items, keys still unprocessed): the caller fails only what
    those keys stood for."""
    keys = list(keys)
    items: list[dict] = []
    left: list[dict] = []
    table = table_name()
    for start in range(0, len(keys), 100):
        request: dict[str, Any] = {"Keys": keys[start : start + 100], "ConsistentRead": consistent}
        if projection:
            request["ProjectionExpression"] = projection
        if names:
            request["ExpressionAttributeNames"] = names
        pending = {table: request}
        for attempt in range(4):
            response = client().batch_get_item(RequestItems=pending)
            items.extend(response.get("Responses", {}).get(table, []))
            pending = response.get("UnprocessedKeys") or {}
            if not pending:
                break
            _backoff(attempt)
        if pending:
            left.extend(pending[table]["Keys"])
    return items, left


def query_all(**request) -> list[dict]:
    """Every item a Query returns, following its pages."""
    items: list[dict] = []
    request = {"TableName": table_name(), **request}
    while True:
        response = client().query(**request)
        items.extend(response.get("Items", []))
        last = response.get("LastEvaluatedKey")
        if not last:
            return items
        request["ExclusiveStartKey"] = last


def _backoff(attempt: int) -> None:
    import random
    import time

    time.sleep(random.uniform(0, 0.02 * 2**attempt))
