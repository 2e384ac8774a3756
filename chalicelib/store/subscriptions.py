"""Subscriptions and their history, in the billing table.

One subscription is one partition, `pk = {merchant_id}#{subscription_id}`:
- `sk = subscription`: the subscription (its state, its terms, its billing
  schedule);
- `sk = history#00000001`, `history#00000002` ...: one record per version of
  the subscription, written in the same transaction as that version, so the
  history holds every change exactly once and in order.

Every write of a subscription goes through `save_subscription`: the record
is written only if its `version` is still the one read (optimistic locking;
the loser of a race gets 409 `version_conflict` and re-reads), together with
the history record of the new version. Nobody updates a subscription field
by field: whoever moves it (the API, the billing run, the payments) reads,
decides with the domain, and saves.

Indexes:
- gsi1 `{merchant_id}#{customer_id}` / `subscription#{subscription_id}`:
  the customer's item collection (its page, `?customer_id=`);
- gsi2 `{merchant_id}#subscriptions` / `{status}#{subscription_id}`: the
  merchant's subscriptions by status (prefix `{status}#`), newest first;
- due `due#<n>` / `due_at`: when the billing run must next look at it
  (`next_billing_at`), n a stable hash of the id modulo BILLING_SHARDS;
  absent once nothing more will ever be billed.
"""
from __future__ import annotations

import re
import uuid

from pynamodb.attributes import BooleanAttribute, JSONAttribute, ListAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, TransactWriteError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex

from chalicelib.domain.errors import Conflict, InvalidRequest, NotFound
from chalicelib.store.base import AuditedRecord, BillingRecord, decode_cursor, page, transaction
from chalicelib.store.customers import CustomerCollection, collection_pk, collection_sk, related
from chalicelib.store.due import due_shard_of
from chalicelib.store.errors import is_condition_failure

SUBSCRIPTION_SK = "subscription"
SUBSCRIPTION_ID = re.compile(r"^sub_[0-9a-z]{26}$")


def subscription_pk(merchant_id: str, subscription_id: str) -> str:
    return f"{merchant_id}#{subscription_id}"


def listing_pk(merchant_id: str) -> str:
    return f"{merchant_id}#subscriptions"


def history_sk(version: int) -> str:
    return f"history#{version:08d}"


class SubscriptionsByStatus(GlobalSecondaryIndex):
    class Meta:
        index_name = "gsi2"
        projection = AllProjection()

    gsi2pk = UnicodeAttribute(hash_key=True)
    gsi2sk = UnicodeAttribute(range_key=True)


class SubscriptionRecord(AuditedRecord):
    """A subscription. Instants are ISO 8601 strings in UTC with `Z`; money
    never appears here except inside the JSON of pending invoice lines, as
    decimal strings."""

    merchant_id = UnicodeAttribute()
    subscription_id = UnicodeAttribute()
    customer_id = UnicodeAttribute()
    # State (chalicelib.domain.lifecycle): status plus the two flags.
    status = UnicodeAttribute()
    paused = BooleanAttribute(default=False)
    paused_at = UnicodeAttribute(null=True)
    cancel_at_period_end = BooleanAttribute(default=False)
    cancel_at = UnicodeAttribute(null=True)
    canceled_at = UnicodeAttribute(null=True)
    # customer (the merchant's API), operator, payment_failed (the dunning).
    cancellation_reason = UnicodeAttribute(null=True)
    cancellation_comment = UnicodeAttribute(null=True)
    # Terms of the current period.
    offer_id = UnicodeAttribute()
    offer_version = NumberAttribute()
    currency = UnicodeAttribute()
    options = ListAttribute(of=UnicodeAttribute, default=list)
    price_overrides = JSONAttribute(null=True)
    # Schedule: periods are anchor + k * interval in the merchant's time zone
    # (kept here: a merchant changing its zone does not move running periods).
    billing_interval = UnicodeAttribute()
    interval_count = NumberAttribute()
    timezone = UnicodeAttribute()
    start_at = UnicodeAttribute()
    trial_end = UnicodeAttribute(null=True)
    anchor = UnicodeAttribute()
    current_period_start = UnicodeAttribute()
    current_period_end = UnicodeAttribute()
    # k of the current period from the anchor: 0 the first paid period,
    # -1 the trial; the number of paid periods elapsed is max(k, 0).
    period_index = NumberAttribute()
    commitment_ends_at = UnicodeAttribute(null=True)
    # Still to come: [{"after_periods", "offer_id", "options"?, "price_overrides"?}],
    # ascending; a phase is removed when its period opens.
    phases = JSONAttribute(default=list)
    # {"offer_id", "options", "price_overrides", "requested_at", "effective_at"}
    # applied at the current period's end, or null.
    pending_change = JSONAttribute(null=True)
    # Fees (flat components, options) are on an invoice, issued or pending,
    # up to this instant (the current period's end once its fees are billed).
    fees_billed_until = UnicodeAttribute(null=True)
    # The current period's usage as already billed by invoices issued inside
    # it: {"period_start", "until", "meters": {meter: {"total", "maximum", "last"}}}.
    usage_billed = JSONAttribute(null=True)
    # Starts of periods closed while paused: their usage goes on the first
    # invoice after the resume.
    deferred_usage_periods = ListAttribute(of=UnicodeAttribute, default=list)
    # Invoices to issue now (opening fees, an immediate change or cancel, a
    # resume): [{"id", "reason", "created_at", "due_at", "currency",
    # "period_start", "period_end", "lines": [InvoiceLine.as_dict()]}].
    pending_invoice_items = JSONAttribute(default=list)
    # next_billing_at: min(the pending items' due_at, current_period_end).
    due_shard = UnicodeAttribute(null=True)
    due_at = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    version = NumberAttribute(default=1)
    gsi1pk = UnicodeAttribute()
    gsi1sk = UnicodeAttribute()
    gsi2pk = UnicodeAttribute()
    gsi2sk = UnicodeAttribute()
    customer_collection = CustomerCollection()
    by_status = SubscriptionsByStatus()

    @staticmethod
    def key(merchant_id: str, subscription_id: str) -> tuple[str, str]:
        return subscription_pk(merchant_id, subscription_id), SUBSCRIPTION_SK

    def sync_index_keys(self) -> None:
        """Derive every index key from the fields they index (called by every write)."""
        self.gsi1pk = collection_pk(self.merchant_id, self.customer_id)
        self.gsi1sk = collection_sk("subscription", self.subscription_id)
        self.gsi2pk = listing_pk(self.merchant_id)
        self.gsi2sk = f"{self.status}#{self.subscription_id}"
        if self.due_at is None:
            self.due_shard = None
        else:
            self.due_shard = due_shard_of(self.subscription_id)


class HistoryRecord(BillingRecord):
    """One change of a subscription: the version it made, when, by whom, and
    the public fields it changed, before and after."""

    version = NumberAttribute()
    at = UnicodeAttribute()
    type = UnicodeAttribute()
    # "merchant:<key prefix>", "operator" or "system".
    actor = UnicodeAttribute()
    before = JSONAttribute(null=True)
    after = JSONAttribute()
    # Why, when the change was given a reason (a compensation, a cancellation's comment).
    reason = UnicodeAttribute(null=True)

    @staticmethod
    def key(merchant_id: str, subscription_id: str, version: int) -> tuple[str, str]:
        return subscription_pk(merchant_id, subscription_id), history_sk(version)


# ---------------------------------------------------------------------------
# Reads


def get_subscription(merchant_id: str, subscription_id: str, *, consistent: bool = False) -> SubscriptionRecord:
    """The subscription, or NotFound (also for another merchant's). Read it
    `consistent` before deciding a change."""
    if not isinstance(subscription_id, str) or not SUBSCRIPTION_ID.match(subscription_id):
        raise NotFound(f"no subscription {subscription_id}")
    try:
        return SubscriptionRecord.get(
            *SubscriptionRecord.key(merchant_id, subscription_id), consistent_read=consistent
        )
    except DoesNotExist:
        raise NotFound(f"no subscription {subscription_id}") from None


def list_subscriptions(
    merchant_id: str, status: str | None, limit: int, cursor: str | None
) -> tuple[list[SubscriptionRecord], str | None]:
    """A page of the merchant's subscriptions, newest first within a status;
    without `status`, grouped by status (trialing, past_due, incomplete,
    canceled, active: the index's order)."""
    key = listing_pk(merchant_id)
    start = decode_cursor(cursor, merchant_id)
    if start is not None and start.get("gsi2pk", {}).get("S") != key:
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    condition = None if status is None else SubscriptionRecord.gsi2sk.startswith(f"{status}#")
    query = SubscriptionRecord.by_status.query(
        key, condition, limit=limit + 1, last_evaluated_key=start, scan_index_forward=False
    )
    return page(query, limit)


def live_subscriptions_of_offer(merchant_id: str, offer_id: str, statuses: tuple[str, ...]):
    """Every subscription of the merchant in one of `statuses` on `offer_id`
    (gsi2 by status, filtered on the offer), page after page: what a price
    change's notice reads, once per price change."""
    key = listing_pk(merchant_id)
    for status in statuses:
        yield from SubscriptionRecord.by_status.query(
            key, SubscriptionRecord.gsi2sk.startswith(f"{status}#"),
            filter_condition=SubscriptionRecord.offer_id == offer_id)


def customer_subscriptions(
    merchant_id: str, customer_id: str, *, status: str | None = None, limit: int | None = None,
    cursor: str | None = None,
) -> tuple[list[SubscriptionRecord], str | None]:
    """The customer's subscriptions, newest first (all of them without `limit`)."""
    records, next_cursor = related(SubscriptionRecord, merchant_id, customer_id, "subscription", limit=limit,
                                   cursor=cursor, filter_condition=None if status is None
                                   else SubscriptionRecord.status == status)
    return records, next_cursor


def history(merchant_id: str, subscription_id: str, limit: int, cursor: str | None, *,
            newest_first: bool = False) -> tuple[list[HistoryRecord], str | None]:
    """A page of the subscription's history, oldest first (or newest first)."""
    key = subscription_pk(merchant_id, subscription_id)
    start = decode_cursor(cursor, merchant_id)
    if start is not None and start.get("pk", {}).get("S") != key:
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    query = HistoryRecord.query(
        key, HistoryRecord.sk.startswith("history#"), limit=limit + 1, last_evaluated_key=start,
        consistent_read=True, scan_index_forward=not newest_first,
    )
    return page(query, limit)


# ---------------------------------------------------------------------------
# Writes


def create_subscription(record: SubscriptionRecord, entry: HistoryRecord) -> None:
    """The subscription at version 1 and its first history record."""
    record.version = 1
    entry.version = 1
    entry.pk, entry.sk = HistoryRecord.key(record.merchant_id, record.subscription_id, 1)
    record.sync_index_keys()
    with transaction(_attempt_token()) as write:
        write.save(record, condition=SubscriptionRecord.pk.does_not_exist())
        write.save(entry, condition=HistoryRecord.pk.does_not_exist())


def save_subscription(record: SubscriptionRecord, entry: HistoryRecord, *, write=None) -> None:
    """Write `record` (changed in memory since it was read at
    `record.version`) as the next version, with `entry` as that version's
    history, if nobody wrote another version meanwhile.

    Without `write`, runs its own transaction: a lost race is Conflict
    `version_conflict` (nothing written). With `write` (a TransactWrite the
    caller opened, e.g. to write an invoice in the same transaction), adds
    both writes to it; the caller commits and maps a failed condition with
    `raise_version_conflict`. On success `record.version` is the new version."""
    expected = int(record.version)
    record.version = expected + 1
    entry.version = expected + 1
    entry.pk, entry.sk = HistoryRecord.key(record.merchant_id, record.subscription_id, expected + 1)
    record.sync_index_keys()
    condition = SubscriptionRecord.version == expected

    def add(to) -> None:
        to.save(record, condition=condition)
        to.save(entry, condition=HistoryRecord.pk.does_not_exist())

    if write is not None:
        add(write)
        return
    try:
        with transaction(_attempt_token()) as own:
            add(own)
    except TransactWriteError as error:
        record.version = expected
        raise_version_conflict(error)
        raise


def raise_version_conflict(error: Exception) -> None:
    """Conflict `version_conflict` for a write that lost a race; returns for any other error."""
    if is_condition_failure(error):
        raise Conflict(
            "the subscription was changed by another request at the same time; read it again and retry",
            code="version_conflict",
        ) from error


def _attempt_token() -> str:
    # One token per attempt: a transaction the SDK retries after a lost
    # answer is not applied twice (which would fail its own condition and
    # look like a conflict).
    return uuid.uuid4().hex
