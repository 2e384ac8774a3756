"""What every record of the billing table shares: its table, its keys, and
the pagination of queries."""
from __future__ import annotations

import base64
import binascii
import functools
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


class AuditedRecord(BillingRecord):
    """A record of the audit trail (docs/architecture.md, "Audit trail"):
    every write of it, a save, an update or a delete, alone or in a
    `transaction()`, carries who made it and when (`actor`, `acted_at`:
    chalicelib.actor), which the audit feed reads back from the table's
    stream. Stamped here, so no writer can forget it."""

    actor = UnicodeAttribute(null=True)
    acted_at = UnicodeAttribute(null=True)

    def stamp(self) -> None:
        from chalicelib.store.dynamo import audit_stamp

        for name, value in audit_stamp().items():
            setattr(self, name, value)

    def stamp_actions(self) -> list:
        from chalicelib.store.dynamo import audit_stamp

        stamp = audit_stamp()
        return [type(self).actor.set(stamp["actor"]), type(self).acted_at.set(stamp["acted_at"])]

    def stamp_stored(self) -> None:
        """Stamp the stored item before it is deleted (a delete carries no
        attributes): the stream's old image then names who deleted it. One
        write more per delete, and none if the item is gone already."""
        from pynamodb.exceptions import UpdateError

        try:
            super().update(actions=self.stamp_actions(), condition=type(self).pk.exists())
        except UpdateError as error:
            from chalicelib.store.errors import is_condition_failure

            if not is_condition_failure(error):
                raise

    def save(self, condition=None, **kwargs):
        self.stamp()
        return super().save(condition, **kwargs)

    def update(self, actions, condition=None, **kwargs):
        return super().update([*actions, *self.stamp_actions()], condition, **kwargs)

    def delete(self, condition=None, **kwargs):
        self.stamp_stored()
        return super().delete(condition, **kwargs)


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

    if _connection is None:
        _connection = Connection(region=BillingRecord.Meta.region)
    return _stamping_transaction()(connection=_connection, client_request_token=client_request_token)


@functools.cache
def _stamping_transaction():
    """PynamoDB's TransactWrite, stamping every audited record it writes
    (AuditedRecord)."""
    from pynamodb.transactions import TransactWrite

    class StampingTransactWrite(TransactWrite):
        def save(self, model, condition=None, return_values=None):
            if isinstance(model, AuditedRecord):
                model.stamp()
            return super().save(model, condition, return_values)

        def update(self, model, actions, condition=None, return_values=None, **kwargs):
            if isinstance(model, AuditedRecord):
                actions = [*actions, *model.stamp_actions()]
            return super().update(model, actions, condition, return_values, **kwargs)

        def delete(self, model, condition=None, **kwargs):
            if isinstance(model, AuditedRecord):
                model.stamp_stored()
            return super().delete(model, condition, **kwargs)

    return StampingTransactWrite
