"""What every record of the billing table shares: its table, its keys, and
the pagination of queries."""
from __future__ import annotations

import base64
import binascii
import json
from itertools import islice

from pynamodb.attributes import UnicodeAttribute
from pynamodb.models import Model

from chalicelib.aws import region
from chalicelib.config import settings
from chalicelib.domain.errors import InvalidRequest


class BillingRecord(Model):
    """Base of every record kept in the billing table (single-table design:
    the record's kind is the sort key or its prefix)."""

    class Meta:
        table_name = settings().table_name
        region = region()
        # Lambda's own network is reliable; a slow DynamoDB call should fail
        # fast and let the caller's retry (SQS, the client) take over.
        connect_timeout_seconds = 2
        read_timeout_seconds = 5
        max_retry_attempts = 3

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)


def encode_cursor(key: dict | None) -> str | None:
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str | None, merchant_id: str) -> dict | None:
    """The start key a cursor stands for; a cursor made for another merchant
    is refused like a forged one."""
    if not cursor:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error):
        raise InvalidRequest("cursor is not one this API returned", param="cursor") from None
    if (
        not isinstance(key, dict)
        or not all(isinstance(v, dict) for v in key.values())
        or not str(key.get("pk", {}).get("S", "")).startswith(f"{merchant_id}#")
    ):
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    return key


def page(query, limit: int) -> tuple[list, str | None]:
    """Take `limit` records from a PynamoDB result iterator (built with
    `limit=limit + 1`) and say whether more follow: the cursor is the key of
    the last record returned, and is only given when another record exists."""
    items = list(islice(query, limit))
    last_key = query.last_evaluated_key if len(items) == limit else None
    if last_key is None or next(query, None) is None:
        return items, None
    return items, encode_cursor(last_key)


_connection = None


def transaction(client_request_token: str | None = None):
    """A PynamoDB TransactWrite on the billing table's connection.

    `client_request_token` makes a retried transaction (same token within
    10 minutes) a no-op instead of a second write."""
    global _connection
    from pynamodb.connection import Connection
    from pynamodb.transactions import TransactWrite

    if _connection is None:
        _connection = Connection(region=BillingRecord.Meta.region)
    return TransactWrite(connection=_connection, client_request_token=client_request_token)
