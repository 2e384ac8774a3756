"""Alerts and the daily digests of expiring cards, in the billing table.

- `{merchant_id}#{alert_id}` / `alert`: one fact that operations (and for an
  expiring card, the customer) are told about. `alert_id` is derived from
  the fact (`alert_id_of("card_expiring#pm_...#2026-12")`), and the record
  is written only if it does not exist: a fact found twice (a job re-run, a
  message delivered twice, two workers) is one alert and one e-mail.
- `{merchant_id}#digest#card_expiring#{YYYY-MM-DD}` / `alert_digest`: the
  day's e-mail to operations listing the cards found expiring that day.

Both carry `deliveries`: audience (`operations`, `customer`) -> `{"status":
"pending" | "sending" | "sent" | "failed" | "bounced" | "undeliverable" |
"no_recipient", "attempts", "last_error", "sent_at", "message_id",
"lease_until" (while `sending`)}`, and what SES reported
after accepting it (`message_ids` of every send, `feedback_ids`, `bounces`,
`bounced_recipients`, `complaint`). A pending or failed delivery keeps the record in the `due`
index (sk `alert` / `alert_digest`, which the billing run's filters never
match) at the time it should have been sent by: whatever never reached the
notifications queue, or left it for its dead-letter queue, is found there
and queued again (services/alerts.py), so nothing is lost silently.

An alert belongs to its customer's item collection (gsi1
`{merchant}#{customer_id}` / `alert#{created_at}#{alert_id}`), which the
customer page reads.
"""
from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from itertools import islice

from pynamodb.attributes import ListAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, PutError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex

from chalicelib.store.base import BillingRecord
from chalicelib.store.customers import CustomerCollection, collection_pk, related
from chalicelib.store.errors import is_condition_failure
from chalicelib.store.due import due_items, due_key, due_shard_of

ALERT_SK = "alert"
# Delivery states that are not retried: sent, or nobody to send to (a
# merchant without `alert_emails`, a customer without an e-mail).
FINAL = ("sent", "no_recipient", "undeliverable")
DIGEST_SK = "alert_digest"


def alert_id_of(fact: str) -> str:
    """`alr_` and 26 base32 characters of the fact's SHA-256: the same fact
    always names the same record."""
    digest = base64.b32encode(hashlib.sha256(fact.encode()).digest()).decode().lower()
    return f"alr_{digest[:26]}"


class Deliveries:
    """Mixin: the `deliveries` JSON of an alert or a digest."""

    deliveries_json: str

    def deliveries(self) -> dict[str, dict]:
        return json.loads(self.deliveries_json or "{}")

    def set_deliveries(self, deliveries: dict[str, dict], retry_at: datetime | None) -> None:
        """Store `deliveries`; while any is not sent the record waits in the
        `due` index at `retry_at` (the resend sweep's time for it)."""
        self.deliveries_json = json.dumps(deliveries, sort_keys=True, separators=(",", ":"))
        if retry_at is None or all(d["status"] in FINAL for d in deliveries.values()):
            self.due_at = None
            self.due_shard = None
        else:
            self.due_at = due_key(retry_at)
            self.due_shard = due_shard_of(self.pk)


class MerchantAlerts(GlobalSecondaryIndex):
    class Meta:
        index_name = "gsi2"
        projection = AllProjection()

    gsi2pk = UnicodeAttribute(hash_key=True)
    gsi2sk = UnicodeAttribute(range_key=True)


def merchant_alerts_pk(merchant_id: str) -> str:
    return f"{merchant_id}#alerts"


class AlertRecord(Deliveries, BillingRecord):
    merchant_id = UnicodeAttribute()
    alert_id = UnicodeAttribute()
    # What happened, as the key was derived from it (`card_expiring#pm_...#2026-12`).
    fact = UnicodeAttribute()
    type = UnicodeAttribute()
    customer_id = UnicodeAttribute(null=True)
    # What the e-mail says, as JSON (money as decimal strings): a snapshot of
    # the fact when it was recorded, so a retry sends what happened then.
    details_json = UnicodeAttribute()
    deliveries_json = UnicodeAttribute()
    created_at = UnicodeAttribute()
    # The digest that lists it (card_expiring only).
    digest_day = UnicodeAttribute(null=True)
    due_shard = UnicodeAttribute(null=True)
    due_at = UnicodeAttribute(null=True)
    version = NumberAttribute(default=1)
    gsi1pk = UnicodeAttribute(null=True)
    gsi1sk = UnicodeAttribute(null=True)
    # The merchant's alerts, newest first (the console's dashboard).
    gsi2pk = UnicodeAttribute(null=True)
    gsi2sk = UnicodeAttribute(null=True)

    customer_collection = CustomerCollection()
    by_merchant = MerchantAlerts()

    @staticmethod
    def key(merchant_id: str, alert_id: str) -> tuple[str, str]:
        return f"{merchant_id}#{alert_id}", ALERT_SK

    def details(self) -> dict:
        return json.loads(self.details_json)


class DigestRecord(Deliveries, BillingRecord):
    merchant_id = UnicodeAttribute()
    type = UnicodeAttribute()
    day = UnicodeAttribute()
    alert_ids = ListAttribute(of=UnicodeAttribute, default=list)
    deliveries_json = UnicodeAttribute()
    created_at = UnicodeAttribute()
    due_shard = UnicodeAttribute(null=True)
    due_at = UnicodeAttribute(null=True)
    version = NumberAttribute(default=1)

    @staticmethod
    def key(merchant_id: str, kind: str, day: str) -> tuple[str, str]:
        return f"{merchant_id}#digest#{kind}#{day}", DIGEST_SK


def new_alert(merchant_id: str, fact: str, kind: str, *, customer_id: str | None, details: dict,
              audiences: tuple[str, ...], created_at: str, retry_at: datetime,
              digest_day: str | None = None) -> AlertRecord:
    alert_id = alert_id_of(f"{merchant_id}#{fact}")
    record = AlertRecord(
        *AlertRecord.key(merchant_id, alert_id), merchant_id=merchant_id, alert_id=alert_id, fact=fact, type=kind,
        customer_id=customer_id, details_json=json.dumps(details, sort_keys=True, separators=(",", ":")),
        created_at=created_at, digest_day=digest_day,
    )
    record.set_deliveries({a: _pending() for a in audiences}, retry_at)
    record.gsi2pk = merchant_alerts_pk(merchant_id)
    record.gsi2sk = f"{created_at}#{alert_id}"
    if customer_id:
        record.gsi1pk = collection_pk(merchant_id, customer_id)
        record.gsi1sk = f"alert#{created_at}#{alert_id}"
    return record


def record_alert(record: AlertRecord) -> bool:
    """Write a new alert unless its fact is already recorded. Returns
    whether this call recorded it (False: it existed, nothing written)."""
    try:
        record.save(condition=AlertRecord.pk.does_not_exist())
    except PutError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def get_alert(merchant_id: str, alert_id: str) -> AlertRecord | None:
    try:
        return AlertRecord.get(*AlertRecord.key(merchant_id, alert_id), consistent_read=True)
    except DoesNotExist:
        return None


def get_alerts(merchant_id: str, alert_ids: list[str]) -> list[AlertRecord]:
    keys = [AlertRecord.key(merchant_id, alert_id) for alert_id in alert_ids]
    found = {r.alert_id: r for r in AlertRecord.batch_get(keys)} if keys else {}
    return [found[a] for a in alert_ids if a in found]


def customer_alerts(merchant_id: str, customer_id: str) -> list[AlertRecord]:
    """Every alert of a customer, newest first (one Query of its item collection)."""
    return related(AlertRecord, merchant_id, customer_id, "alert")[0]


def recent_alerts(merchant_id: str, since: str, limit: int) -> list[AlertRecord]:
    """The merchant's alerts recorded at or after `since`, newest first."""
    query = AlertRecord.by_merchant.query(merchant_alerts_pk(merchant_id), AlertRecord.gsi2sk >= since,
                                          scan_index_forward=False, limit=limit)
    return list(islice(query, limit))


def add_to_digest(merchant_id: str, kind: str, day: str, alert_ids: list[str], *, created_at: str,
                  retry_at: datetime) -> bool:
    """Add `alert_ids` to the day's digest, created if needed, unless that
    digest was already sent (False: the caller puts them in another one)."""
    from chalicelib.store import dynamo

    pk, sk = DigestRecord.key(merchant_id, kind, day)
    deliveries = json.dumps({"operations": _pending()}, sort_keys=True, separators=(",", ":"))
    try:
        dynamo.client().update_item(
            TableName=dynamo.table_name(),
            Key=dynamo.key(pk, sk),
            UpdateExpression=(
                "SET merchant_id = :merchant, #type = :kind, #day = :day,"
                " alert_ids = list_append(if_not_exists(alert_ids, :empty), :ids),"
                " deliveries_json = if_not_exists(deliveries_json, :deliveries),"
                " created_at = if_not_exists(created_at, :created),"
                " due_at = if_not_exists(due_at, :due), due_shard = if_not_exists(due_shard, :shard)"
                " ADD version :one"
            ),
            # Not sent yet: only marking the digest sent takes due_at away.
            ConditionExpression="attribute_not_exists(pk) OR attribute_exists(due_at)",
            ExpressionAttributeNames={"#type": "type", "#day": "day"},
            ExpressionAttributeValues={
                ":merchant": dynamo.s(merchant_id), ":kind": dynamo.s(kind), ":day": dynamo.s(day),
                ":empty": {"L": []}, ":ids": {"L": [dynamo.s(a) for a in alert_ids]},
                ":deliveries": dynamo.s(deliveries), ":created": dynamo.s(created_at),
                ":due": dynamo.s(due_key(retry_at)), ":shard": dynamo.s(due_shard_of(pk)), ":one": dynamo.n(1),
            },
        )
    except Exception as error:
        if dynamo.is_condition_failure(error):
            return False
        raise
    return True


def mark_digested(merchant_id: str, alert_ids: list[str], day: str) -> None:
    """Note on each alert the digest that lists it (a card found again
    tomorrow is then not listed again)."""
    for alert_id in alert_ids:
        AlertRecord(*AlertRecord.key(merchant_id, alert_id)).update(
            actions=[AlertRecord.digest_day.set(day)], condition=AlertRecord.pk.exists())


def overdue(now: datetime) -> list[dict]:
    """The notification messages of every alert and digest whose e-mails
    are overdue (the `due` index, each shard; keys only)."""
    messages = []
    for pk, sk, _ in due_items(now, (ALERT_SK, DIGEST_SK)):
        merchant_id, _, rest = pk.partition("#")
        if sk == ALERT_SK:
            messages.append({"type": "alert", "merchant_id": merchant_id, "alert_id": rest})
        else:
            _, kind, day = rest.split("#", 2)
            messages.append({"type": "digest", "merchant_id": merchant_id, "kind": kind, "day": day})
    return messages


def get_digest(merchant_id: str, kind: str, day: str) -> DigestRecord | None:
    try:
        return DigestRecord.get(*DigestRecord.key(merchant_id, kind, day), consistent_read=True)
    except DoesNotExist:
        return None


def save_deliveries(record, expected_version: int) -> bool:
    """Write the record's deliveries (and due) if nobody wrote it since
    `expected_version` was read. Returns False after a lost race."""
    try:
        record.update(
            actions=[type(record).deliveries_json.set(record.deliveries_json),
                     type(record).due_at.set(record.due_at) if record.due_at else type(record).due_at.remove(),
                     type(record).due_shard.set(record.due_shard) if record.due_shard
                     else type(record).due_shard.remove(),
                     type(record).version.set(expected_version + 1)],
            condition=type(record).version == expected_version,
        )
    except UpdateError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def _pending() -> dict:
    return {"status": "pending", "attempts": 0, "last_error": None, "sent_at": None, "message_id": None}
