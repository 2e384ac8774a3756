"""Merchants' webhook endpoints and their deliveries, in the billing table.

- `{merchant_id}#webhook_endpoints` / `endpoint#{we_id}`: one endpoint (its
  URL, the event types it listens to, its signing secret). A merchant's
  endpoints share one partition, so the dispatcher reads them all with one
  consistent Query, and the API lists them newest first (ids are ULIDs).
  The secret is kept to sign with: it is returned once, at creation, never
  logged, and these records are not audited (store/audit.py), so it never
  reaches the audit trail.
- `{merchant_id}#{whd_id}` / `webhook_delivery`: one event for one endpoint.
  Its id is derived from the event id and the endpoint id, and it is put
  only if absent: an event delivered twice to the dispatcher (SQS, the bus,
  a derivation run twice) is one delivery. It keeps the body every attempt
  sends, each attempt's outcome, and, while an attempt is owed, its place
  in the `due` index (sk `webhook_delivery`) at the time of that attempt,
  or at the end of the lease of an attempt in progress (a sender that died
  is replaced). In its endpoint's list (gsi1 `{merchant}#{we_id}#deliveries`
  / `webhook_delivery#{created_at}#{whd_id}`, newest first); gone after
  `DELIVERY_RETENTION_DAYS` (TTL `expires_at`).
"""
from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta

from pynamodb.attributes import ListAttribute, NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, PutError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex

from chalicelib.domain.errors import InvalidRequest
from chalicelib.store.base import BillingRecord, decode_cursor, page
from chalicelib.store.due import due_items, due_key, due_shard_of
from chalicelib.store.errors import is_condition_failure

DELIVERY_SK = "webhook_delivery"
ENDPOINT_PREFIX = "endpoint#"
DELIVERY_RETENTION_DAYS = 30
# Attempts kept on a delivery (the newest): 13 automatic ones at most, and
# whatever retries a merchant asks for.
KEPT_ATTEMPTS = 50


def endpoints_pk(merchant_id: str) -> str:
    return f"{merchant_id}#webhook_endpoints"


def delivery_id_of(event_id: str, endpoint_id: str) -> str:
    """`whd_` and 26 base32 characters of SHA-256 of the event and endpoint:
    the same event for the same endpoint always names the same delivery."""
    digest = base64.b32encode(hashlib.sha256(f"{event_id}#{endpoint_id}".encode()).digest()).decode().lower()
    return f"whd_{digest[:26]}"


class WebhookEndpointRecord(BillingRecord):
    merchant_id = UnicodeAttribute()
    endpoint_id = UnicodeAttribute()
    url = UnicodeAttribute()
    events = ListAttribute(of=UnicodeAttribute)
    secret = UnicodeAttribute()
    description = UnicodeAttribute(null=True)
    status = UnicodeAttribute(default="enabled")
    created_at = UnicodeAttribute()

    @staticmethod
    def key(merchant_id: str, endpoint_id: str) -> tuple[str, str]:
        return endpoints_pk(merchant_id), f"{ENDPOINT_PREFIX}{endpoint_id}"


class EndpointDeliveries(GlobalSecondaryIndex):
    class Meta:
        index_name = "gsi1"
        projection = AllProjection()

    gsi1pk = UnicodeAttribute(hash_key=True)
    gsi1sk = UnicodeAttribute(range_key=True)


def deliveries_pk(merchant_id: str, endpoint_id: str) -> str:
    return f"{merchant_id}#{endpoint_id}#deliveries"


class WebhookDeliveryRecord(BillingRecord):
    merchant_id = UnicodeAttribute()
    delivery_id = UnicodeAttribute()
    endpoint_id = UnicodeAttribute()
    event_id = UnicodeAttribute()
    event_type = UnicodeAttribute()
    body = UnicodeAttribute()
    status = UnicodeAttribute()  # pending | succeeded | failed
    created_at = UnicodeAttribute()
    first_attempt_at = UnicodeAttribute(null=True)
    next_attempt_at = UnicodeAttribute(null=True)
    # JSON list of {"at", "status_code", "error", "duration_ms", "manual"}, oldest first.
    attempts_json = UnicodeAttribute(default="[]")
    # Failed automatic attempts since the first (the backoff's step).
    failures = NumberAttribute(default=0)
    version = NumberAttribute(default=1)
    due_shard = UnicodeAttribute(null=True)
    due_at = UnicodeAttribute(null=True)
    gsi1pk = UnicodeAttribute()
    gsi1sk = UnicodeAttribute()
    expires_at = TTLAttribute()

    by_endpoint = EndpointDeliveries()

    @staticmethod
    def key(merchant_id: str, delivery_id: str) -> tuple[str, str]:
        return f"{merchant_id}#{delivery_id}", DELIVERY_SK

    def attempts(self) -> list[dict]:
        return json.loads(self.attempts_json or "[]")


# -- endpoints ----------------------------------------------------------------------


def save_endpoint(record: WebhookEndpointRecord) -> None:
    record.save(condition=WebhookEndpointRecord.pk.does_not_exist())


def new_endpoint(merchant_id: str, endpoint_id: str, *, url: str, events: list[str], secret: str,
                 description: str | None, created_at: str) -> WebhookEndpointRecord:
    return WebhookEndpointRecord(*WebhookEndpointRecord.key(merchant_id, endpoint_id), merchant_id=merchant_id,
                                 endpoint_id=endpoint_id, url=url, events=events, secret=secret,
                                 description=description, created_at=created_at)


def find_endpoint(merchant_id: str, endpoint_id: str) -> WebhookEndpointRecord | None:
    try:
        return WebhookEndpointRecord.get(*WebhookEndpointRecord.key(merchant_id, endpoint_id), consistent_read=True)
    except DoesNotExist:
        return None


def all_endpoints(merchant_id: str) -> list[WebhookEndpointRecord]:
    """Every endpoint of the merchant, newest first (one consistent Query)."""
    return list(WebhookEndpointRecord.query(endpoints_pk(merchant_id),
                                            WebhookEndpointRecord.sk.startswith(ENDPOINT_PREFIX),
                                            consistent_read=True, scan_index_forward=False))


def list_endpoints(merchant_id: str, *, limit: int, cursor: str | None) -> tuple[list[WebhookEndpointRecord], str | None]:
    start = decode_cursor(cursor, merchant_id)
    if start is not None and start.get("pk", {}).get("S") != endpoints_pk(merchant_id):
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    query = WebhookEndpointRecord.query(endpoints_pk(merchant_id), WebhookEndpointRecord.sk.startswith(ENDPOINT_PREFIX),
                                        scan_index_forward=False, last_evaluated_key=start, limit=limit + 1)
    return page(query, limit)


def delete_endpoint(merchant_id: str, endpoint_id: str) -> bool:
    """Remove the endpoint; False if there was none. Its deliveries stay
    until they expire; one still owed an attempt fails at it."""
    from pynamodb.exceptions import DeleteError

    record = WebhookEndpointRecord(*WebhookEndpointRecord.key(merchant_id, endpoint_id))
    try:
        record.delete(condition=WebhookEndpointRecord.pk.exists())
    except DeleteError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


# -- deliveries ---------------------------------------------------------------------


def new_delivery(merchant_id: str, endpoint_id: str, *, event_id: str, event_type: str, body: str,
                 now: datetime) -> WebhookDeliveryRecord:
    """A delivery owed its first attempt now (in the `due` index at once: if
    nobody makes that attempt, the retry job does)."""
    from chalicelib.clock import isoformat

    delivery_id = delivery_id_of(event_id, endpoint_id)
    created_at = isoformat(now)
    record = WebhookDeliveryRecord(
        *WebhookDeliveryRecord.key(merchant_id, delivery_id), merchant_id=merchant_id, delivery_id=delivery_id,
        endpoint_id=endpoint_id, event_id=event_id, event_type=event_type, body=body, status="pending",
        created_at=created_at, next_attempt_at=created_at,
        gsi1pk=deliveries_pk(merchant_id, endpoint_id), gsi1sk=f"{DELIVERY_SK}#{created_at}#{delivery_id}",
        expires_at=now + timedelta(days=DELIVERY_RETENTION_DAYS),
    )
    _set_due(record, now)
    return record


def record_delivery(record: WebhookDeliveryRecord) -> bool:
    """Write a new delivery unless it exists. Whether this call wrote it."""
    try:
        record.save(condition=WebhookDeliveryRecord.pk.does_not_exist())
    except PutError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def find_delivery(merchant_id: str, delivery_id: str) -> WebhookDeliveryRecord | None:
    try:
        return WebhookDeliveryRecord.get(*WebhookDeliveryRecord.key(merchant_id, delivery_id), consistent_read=True)
    except DoesNotExist:
        return None


def list_deliveries(merchant_id: str, endpoint_id: str, *, limit: int,
                    cursor: str | None) -> tuple[list[WebhookDeliveryRecord], str | None]:
    """An endpoint's deliveries, newest first."""
    key = deliveries_pk(merchant_id, endpoint_id)
    start = decode_cursor(cursor, merchant_id)
    if start is not None and start.get("gsi1pk", {}).get("S") != key:
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    query = WebhookDeliveryRecord.by_endpoint.query(key, WebhookDeliveryRecord.gsi1sk.startswith(f"{DELIVERY_SK}#"),
                                                    scan_index_forward=False, last_evaluated_key=start,
                                                    limit=limit + 1)
    return page(query, limit)


def claim_delivery(record: WebhookDeliveryRecord, lease_until: datetime) -> bool:
    """Take the delivery for one attempt: its version moves on, and it waits
    in the `due` index until the lease ends, so that a sender that dies
    mid-attempt is replaced. False: another sender took it first."""
    try:
        record.update(actions=[WebhookDeliveryRecord.version.add(1),
                               WebhookDeliveryRecord.due_at.set(due_key(lease_until)),
                               WebhookDeliveryRecord.due_shard.set(due_shard_of(record.pk))],
                      condition=WebhookDeliveryRecord.version == record.version)
    except UpdateError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def record_attempt(record: WebhookDeliveryRecord, attempt: dict, *, status: str, failures: int,
                   first_attempt_at: str, next_attempt: datetime | None) -> bool:
    """Write an attempt's outcome on the delivery claimed for it (`record`
    as `claim_delivery` left it): the attempt added, the status, and the
    next attempt (the `due` index) or none. False: the claim was lost."""
    from chalicelib.clock import isoformat

    attempts = [*record.attempts(), attempt][-KEPT_ATTEMPTS:]
    actions = [WebhookDeliveryRecord.version.add(1),
               WebhookDeliveryRecord.attempts_json.set(json.dumps(attempts, separators=(",", ":"))),
               WebhookDeliveryRecord.status.set(status), WebhookDeliveryRecord.failures.set(failures),
               WebhookDeliveryRecord.first_attempt_at.set(first_attempt_at)]
    if next_attempt is None:
        actions += [WebhookDeliveryRecord.next_attempt_at.remove(), WebhookDeliveryRecord.due_at.remove(),
                    WebhookDeliveryRecord.due_shard.remove()]
    else:
        actions += [WebhookDeliveryRecord.next_attempt_at.set(isoformat(next_attempt)),
                    WebhookDeliveryRecord.due_at.set(due_key(next_attempt)),
                    WebhookDeliveryRecord.due_shard.set(due_shard_of(record.pk))]
    try:
        record.update(actions=actions, condition=WebhookDeliveryRecord.version == record.version)
    except UpdateError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def due_deliveries(now: datetime) -> list[tuple[str, str]]:
    """(merchant_id, delivery_id) of every delivery owed an attempt by `now`,
    oldest first."""
    found = []
    for pk, _, _ in due_items(now, (DELIVERY_SK,)):
        merchant_id, _, delivery_id = pk.partition("#")
        found.append((merchant_id, delivery_id))
    return found


def _set_due(record: WebhookDeliveryRecord, at: datetime) -> None:
    record.due_at = due_key(at)
    record.due_shard = due_shard_of(record.pk)
