"""Invoices, their gapless numbers, and what billing remembers per period.

An invoice is one item, `pk = {merchant_id}#{invoice_id}`, `sk = invoice`:
lines and tax as JSON text, every amount a decimal string, the payment
attempts as JSON text. Its id is derived from what it bills (subscription
and boundary, or the instant of an immediate change), so a retried or
overlapping run computes the same id and the conditional put
(`attribute_not_exists`) lets only one invoice exist for it.

The invoice sits in three indexes:
- `gsi1` (`{merchant}#{customer_id}`, `invoice#{id}`): it joins its
  customer's item collection (store/customers.py), so the customer page and
  the listing by customer (or by one of its subscriptions) read only that
  customer's items; ids sort by the instant they bill, so newest first;
- `gsi2` (`{merchant}#invoices#{status}`, `{id}`): the merchant-wide
  listing by status; all statuses at once is a merge of these partitions
  on their common sort key;
- `due` (`due#<n>`, `due_at`): when something must happen to it: the next
  payment attempt after a failure, or the end of the lease of an attempt
  in flight (a crashed worker's charge is resumed from there). Paid, void
  and uncollectible invoices leave the index.

Numbers: `{merchant}#invoice_counter` / `counter#{YYYY}` holds the last
number given in a year. Finalizing an invoice is one transaction of the
counter moved from n-1 to n and the invoice moved from draft (or nothing)
to open with number n: a number is given exactly when an invoice is
finalized, never skipped, never given twice, whatever races.

Billed usage: `{merchant}#{subscription_id}` / `subscription#billed#{period_start}`
keeps the usage each period was invoiced with (per meter) and the plan it
was rated under, written in the transaction that finalizes the invoice.
Usage that arrives later is the difference from it (late usage, billed on
the next invoice). These records sort right after the subscription's own
item, so the billing run reads both with one Query.
"""
from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Callable, Iterable

from pynamodb.attributes import BooleanAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, PutError, TransactWriteError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from ulid import ULID

from chalicelib.domain.errors import Conflict, InvalidRequest, NotFound
from chalicelib.domain.rating import MeterUsage
from chalicelib.store.base import AuditedRecord, BillingRecord, decode_cursor, encode_cursor, page, transaction
from chalicelib.store.customers import CustomerCollection, collection_pk, collection_sk
from chalicelib.store.due import due_key, due_shard_of
from chalicelib.store.errors import is_condition_failure

STATUSES = ("draft", "open", "paid", "void", "uncollectible")
INVOICE_SK = "invoice"

# How many times finalization re-reads the counter after losing a race for
# a number before giving up (the caller's retry, SQS or the client, goes on).
FINALIZE_ATTEMPTS = 8


# ---------------------------------------------------------------------------
# Keys and ids


def invoice_pk(merchant_id: str, invoice_id: str) -> str:
    return f"{merchant_id}#{invoice_id}"




def status_partition(merchant_id: str, status: str) -> str:
    return f"{merchant_id}#invoices#{status}"


def invoice_id_for(merchant_id: str, subscription_id: str, at: datetime, purpose: str = "cycle") -> str:
    """The id of the invoice that bills `subscription_id` at `at` for `purpose`.

    Deterministic, so that whoever bills this boundary again (a retried
    message, an overlapping run, a second worker) names the same invoice;
    ULID-shaped (48-bit milliseconds of `at`, then 80 bits of a hash of
    what it bills), so ids still sort by time like every other id."""
    moment = at.astimezone(timezone.utc)
    millis = int(moment.timestamp() * 1000)
    digest = hashlib.sha256(f"{merchant_id}|{subscription_id}|{purpose}|{moment.isoformat()}".encode()).digest()
    return f"inv_{str(ULID.from_bytes(millis.to_bytes(6, 'big') + digest[:10])).lower()}"


# ---------------------------------------------------------------------------
# Models


class InvoicesByStatus(GlobalSecondaryIndex):
    class Meta:
        index_name = "gsi2"
        projection = AllProjection()

    gsi2pk = UnicodeAttribute(hash_key=True)
    gsi2sk = UnicodeAttribute(range_key=True)


class IssuedDocument:
    """The JSON-held parts an invoice and a credit note both keep: lines,
    tax lines, and the seller and buyer as they stood when it was issued."""

    def line_items(self) -> list[dict]:
        return json.loads(self.lines)

    def tax_lines(self) -> list[dict]:
        return json.loads(self.tax)

    def party(self, name: str) -> dict:
        text = getattr(self, name)
        return json.loads(text) if text else {}


class InvoiceRecord(IssuedDocument, AuditedRecord):
    merchant_id = UnicodeAttribute()
    invoice_id = UnicodeAttribute()
    number = UnicodeAttribute(null=True)
    status = UnicodeAttribute()
    # Why it exists: subscription_create, subscription_cycle, subscription_update, subscription_cancel.
    billing_reason = UnicodeAttribute()
    customer_id = UnicodeAttribute()
    subscription_id = UnicodeAttribute(null=True)
    currency = UnicodeAttribute()
    # The instant it bills (a boundary, or the moment of a change): orders listings.
    invoice_date = UnicodeAttribute()
    period_start = UnicodeAttribute(null=True)
    period_end = UnicodeAttribute(null=True)
    # JSON text: the lines as the API shows them, the tax lines.
    lines = UnicodeAttribute()
    tax = UnicodeAttribute()
    # Decimal strings in major units, rounded to the currency.
    subtotal = UnicodeAttribute()
    tax_amount = UnicodeAttribute()
    total = UnicodeAttribute()
    credit_applied = UnicodeAttribute()
    amount_due = UnicodeAttribute()
    amount_paid = UnicodeAttribute()
    # The customer's credit balance before and after this invoice.
    starting_balance = UnicodeAttribute()
    ending_balance = UnicodeAttribute()
    reverse_charge = BooleanAttribute(default=False)
    # JSON text: who sells and who buys, as they were when it was finalized
    # (an issued invoice does not change when a customer moves).
    seller = UnicodeAttribute(null=True)
    buyer = UnicodeAttribute(null=True)
    locale = UnicodeAttribute(default="en")
    # JSON text: [{"attempt", "at", "status", "payment_intent", "failure_code"}];
    # status pending (started, outcome unknown), processing, succeeded, failed.
    payment_attempts = UnicodeAttribute(default="[]")
    next_payment_attempt = UnicodeAttribute(null=True)
    # JSON text: [{"payment_intent", "refund", "amount", "reason", "at"}]:
    # money that reached the invoice when it could take none (void, or
    # already paid), given back at Stripe once per PaymentIntent.
    stray_refunds = UnicodeAttribute(default="[]")
    # Credit notes (store/credit_notes.py) and offline payments
    # (services/offline_payments.py), written in the same transaction as the
    # invoice. `amount_credited`: the total of its credit notes (None: 0).
    # `credit_notes`: JSON [{"id", "number", "subtotal", "tax", "total",
    # "refund", "lines": {line id: pre-tax amount}, "request", "created_at"}];
    # `offline_payments`: JSON [{"id", "method", "amount", "applied",
    # "to_credit_balance", "reference", "received_at", "request", "created_at"}].
    # `request`: a digest of the Idempotency-Key that made it, so a request
    # retried after a crash finds what it already did.
    amount_credited = UnicodeAttribute(null=True)
    credit_notes = UnicodeAttribute(default="[]")
    offline_payments = UnicodeAttribute(default="[]")
    # The first failure: retries are counted from it (dunning_retry_days).
    first_failure_at = UnicodeAttribute(null=True)
    payment_link_url = UnicodeAttribute(null=True)
    payment_link_expires_at = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    finalized_at = UnicodeAttribute(null=True)
    paid_at = UnicodeAttribute(null=True)
    voided_at = UnicodeAttribute(null=True)
    marked_uncollectible_at = UnicodeAttribute(null=True)
    due_at = UnicodeAttribute(null=True)
    due_shard = UnicodeAttribute(null=True)
    gsi1pk = UnicodeAttribute()
    gsi1sk = UnicodeAttribute()
    gsi2pk = UnicodeAttribute()
    gsi2sk = UnicodeAttribute()
    version = NumberAttribute(default=1)

    customer_collection = CustomerCollection()
    by_status = InvoicesByStatus()

    @staticmethod
    def key(merchant_id: str, invoice_id: str) -> tuple[str, str]:
        return invoice_pk(merchant_id, invoice_id), INVOICE_SK

    # -- JSON-held parts --------------------------------------------------

    def attempts(self) -> list[dict]:
        return json.loads(self.payment_attempts or "[]")

    def set_attempts(self, attempts: list[dict]) -> None:
        self.payment_attempts = json.dumps(attempts, separators=(",", ":"))

    def refunded_strays(self) -> list[dict]:
        return json.loads(self.stray_refunds or "[]")

    def set_refunded_strays(self, refunds: list[dict]) -> None:
        self.stray_refunds = json.dumps(refunds, separators=(",", ":"))

    def credit_note_entries(self) -> list[dict]:
        return json.loads(self.credit_notes or "[]")

    def set_credit_note_entries(self, entries: list[dict]) -> None:
        self.credit_notes = json.dumps(entries, separators=(",", ":"))

    def payment_entries(self) -> list[dict]:
        return json.loads(self.offline_payments or "[]")

    def set_payment_entries(self, entries: list[dict]) -> None:
        self.offline_payments = json.dumps(entries, separators=(",", ":"))

    def money(self, name: str) -> Decimal:
        return Decimal(getattr(self, name))

    def set_due(self, moment: datetime | None) -> None:
        """Put the invoice in the `due` index at `moment` (None: take it out)."""
        if moment is None:
            self.due_at = None
            self.due_shard = None
        else:
            self.due_at = due_key(moment)
            self.due_shard = due_shard_of(self.invoice_id)

    def sync_keys(self) -> None:
        """The index keys that follow from the fields (status, date, customer)."""
        self.gsi1pk = collection_pk(self.merchant_id, self.customer_id)
        self.gsi1sk = collection_sk("invoice", self.invoice_id)
        self.gsi2pk = status_partition(self.merchant_id, self.status)
        self.gsi2sk = self.invoice_id


class InvoiceCounterRecord(BillingRecord):
    """The last invoice number given in a year (a count, exact as a number)."""

    last = NumberAttribute()

    @staticmethod
    def key(merchant_id: str, year: int) -> tuple[str, str]:
        return f"{merchant_id}#invoice_counter", f"counter#{year:04d}"


class BilledUsageRecord(BillingRecord):
    """The usage a period was invoiced with, per meter, and under which plan
    (so late usage of it is rated on the same terms); `free`: a trial
    period, whose usage is never charged, late or not."""

    usage = UnicodeAttribute()
    # {"offer_id", "options", "price_overrides"} of the period.
    plan = UnicodeAttribute(default="{}")
    free = BooleanAttribute(default=False)
    invoices = UnicodeAttribute(default="[]")
    version = NumberAttribute(default=1)

    @staticmethod
    def key(merchant_id: str, subscription_id: str, period_start: str) -> tuple[str, str]:
        return f"{merchant_id}#{subscription_id}", f"{BILLED_SK_PREFIX}{period_start}"

    @property
    def period_start(self) -> str:
        return self.sk[len(BILLED_SK_PREFIX):]

    def meters(self) -> dict[str, MeterUsage]:
        return usage_from_json(self.usage)

    def plan_fields(self) -> dict:
        return json.loads(self.plan or "{}")


# In the subscription's partition, sorted right after its `subscription`
# item, so that one Query reads the subscription with what it billed.
BILLED_SK_PREFIX = "subscription#billed#"


def usage_to_json(usage: dict[str, MeterUsage]) -> str:
    def text(value: Decimal | None) -> str | None:
        return None if value is None else format(value, "f")

    return json.dumps(
        {meter: [text(u.total), text(u.maximum), text(u.last)] for meter, u in sorted(usage.items())},
        separators=(",", ":"),
    )


def usage_from_json(text: str) -> dict[str, MeterUsage]:
    def number(value: str | None) -> Decimal | None:
        return None if value is None else Decimal(value)

    return {
        meter: MeterUsage(Decimal(total), number(maximum), number(last))
        for meter, (total, maximum, last) in json.loads(text or "{}").items()
    }


# ---------------------------------------------------------------------------
# Reads


def get_invoice(merchant_id: str, invoice_id: str, *, consistent: bool = True) -> InvoiceRecord:
    """The invoice, or NotFound (also for another merchant's)."""
    found = find_invoice(merchant_id, invoice_id, consistent=consistent)
    if found is None:
        raise NotFound(f"no invoice {invoice_id}")
    return found


def find_invoice(merchant_id: str, invoice_id: str, *, consistent: bool = True) -> InvoiceRecord | None:
    if not isinstance(invoice_id, str) or not invoice_id.startswith("inv_") or len(invoice_id) > 64:
        return None
    try:
        return InvoiceRecord.get(*InvoiceRecord.key(merchant_id, invoice_id), consistent_read=consistent)
    except DoesNotExist:
        return None


def find_invoices(merchant_id: str, invoice_ids) -> dict[str, InvoiceRecord]:
    """The merchant's invoices of these ids that exist, by id (BatchGetItem,
    100 keys a request; eventually consistent)."""
    wanted = [i for i in dict.fromkeys(invoice_ids) if isinstance(i, str) and i.startswith("inv_") and len(i) <= 64]
    if not wanted:
        return {}
    return {r.invoice_id: r for r in InvoiceRecord.batch_get([InvoiceRecord.key(merchant_id, i) for i in wanted])}


def subscription_for_billing(merchant_id: str, subscription_id: str):
    """The subscription and the billed usage of its periods (period start ->
    BilledUsageRecord), in one consistent Query of its partition (the
    `subscription` item and the `subscription#billed#...` items after it;
    its history sorts apart). NotFound when there is no such subscription."""
    from chalicelib.store import dynamo
    from chalicelib.store.subscriptions import SUBSCRIPTION_ID, SubscriptionRecord, subscription_pk

    if not isinstance(subscription_id, str) or not SUBSCRIPTION_ID.match(subscription_id):
        raise NotFound(f"no subscription {subscription_id}")
    items = dynamo.query_all(
        KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
        ExpressionAttributeValues={
            ":pk": {"S": subscription_pk(merchant_id, subscription_id)},
            ":prefix": {"S": "subscription"},
        },
        ConsistentRead=True,
    )
    subscription = None
    billed: dict[str, BilledUsageRecord] = {}
    for item in items:
        sk = item["sk"]["S"]
        if sk == "subscription":
            subscription = SubscriptionRecord.from_raw_data(item)
        elif sk.startswith(BILLED_SK_PREFIX):
            record = BilledUsageRecord.from_raw_data(item)
            billed[record.period_start] = record
    if subscription is None:
        raise NotFound(f"no subscription {subscription_id}")
    return subscription, billed


def last_number(merchant_id: str, year: int) -> int:
    try:
        return int(InvoiceCounterRecord.get(*InvoiceCounterRecord.key(merchant_id, year), consistent_read=True).last)
    except DoesNotExist:
        return 0


def customer_invoices(
    merchant_id: str,
    customer_id: str,
    *,
    limit: int,
    cursor: str | None = None,
    subscription_id: str | None = None,
    status: str | None = None,
) -> tuple[list[InvoiceRecord], str | None]:
    """A page of one customer's invoices, newest first, optionally only one
    subscription's and/or one status (filtered inside the customer's own
    collection: a customer has a few invoices per period, never the merchant's)."""
    start = decode_cursor(cursor, merchant_id)
    partition = collection_pk(merchant_id, customer_id)
    if start is not None and start.get("gsi1pk", {}).get("S") != partition:
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    condition = None
    if subscription_id is not None:
        condition = InvoiceRecord.subscription_id == subscription_id
    if status is not None:
        by_status = InvoiceRecord.status == status
        condition = by_status if condition is None else condition & by_status
    query = InvoiceRecord.customer_collection.query(
        partition,
        InvoiceRecord.gsi1sk.startswith("invoice#"),
        filter_condition=condition,
        scan_index_forward=False,
        limit=limit + 1,
        last_evaluated_key=start,
    )
    return page(query, limit)


def invoices_by_status(
    merchant_id: str, statuses: Iterable[str], *, limit: int, cursor: str | None = None
) -> tuple[list[InvoiceRecord], str | None]:
    """A page of the merchant's invoices in `statuses`, newest first.

    Each status is one partition of gsi2, sorted by `{date}#{id}`; several
    are merged on that key. The cursor is the last key shown: the next page
    reads, in each partition, only what sorts before it."""
    statuses = list(statuses)
    before = _decode_merge_cursor(cursor, merchant_id)
    found: list[InvoiceRecord] = []
    for status in statuses:
        condition = InvoiceRecord.gsi2sk < before if before is not None else None
        query = InvoiceRecord.by_status.query(
            status_partition(merchant_id, status), condition, scan_index_forward=False, limit=limit + 1
        )
        found.extend(query)
    found.sort(key=lambda record: record.gsi2sk, reverse=True)
    shown = found[:limit]
    next_cursor = _encode_merge_cursor(merchant_id, shown[-1].gsi2sk) if len(found) > limit else None
    return shown, next_cursor


def _encode_merge_cursor(merchant_id: str, last_sort_key: str) -> str:
    # The shape decode_cursor checks: a key-like map whose pk names the merchant.
    return encode_cursor({"pk": {"S": f"{merchant_id}#invoices"}, "gsi2sk": {"S": last_sort_key}})


def _decode_merge_cursor(cursor: str | None, merchant_id: str) -> str | None:
    key = decode_cursor(cursor, merchant_id)
    if key is None:
        return None
    value = key.get("gsi2sk", {}).get("S")
    if key.get("pk", {}).get("S") != f"{merchant_id}#invoices" or not isinstance(value, str):
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    return value


def latest_for_customer(merchant_id: str, customer_id: str, count: int = 5) -> list[InvoiceRecord]:
    """The customer's `count` latest invoices (the customer page's)."""
    items, _ = customer_invoices(merchant_id, customer_id, limit=count)
    return items


def open_invoices_of_customer(merchant_id: str, customer_id: str) -> list[InvoiceRecord]:
    """Every open invoice of a customer, oldest first (retried in that order)."""
    query = InvoiceRecord.customer_collection.query(
        collection_pk(merchant_id, customer_id),
        InvoiceRecord.gsi1sk.startswith("invoice#"),
        filter_condition=InvoiceRecord.status == "open",
        scan_index_forward=True,
    )
    return list(query)


# ---------------------------------------------------------------------------
# Writes


@dataclass
class Finalized:
    """What finalization gave: the number, and whether this call gave it
    (False: the invoice was already finalized by someone else)."""

    number: str | None
    by_this_call: bool


def save_draft(record: InvoiceRecord) -> bool:
    """Write a new draft; False when an invoice with this id exists already
    (it bills the same thing: the caller reads and continues from it)."""
    record.status = "draft"
    record.sync_keys()
    try:
        record.save(condition=InvoiceRecord.pk.does_not_exist())
    except PutError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def format_number(prefix: str, year: int, sequence: int) -> str:
    """API.md's invoice number: `{prefix}{YYYY}-{000001}`."""
    return f"{prefix}{year:04d}-{sequence:06d}"


def finalize(
    record: InvoiceRecord,
    *,
    prefix: str,
    year: int,
    finalized_at: str,
    new: bool,
    also: Callable | None = None,
    then: str = "open",
) -> Finalized:
    """Give the invoice the merchant's next number and make it open, in one
    transaction with the counter (and whatever `also(write)` adds: the
    subscription's advance, the billed usage).

    `new`: the record was never written (it is put, `attribute_not_exists`);
    otherwise it is the stored draft (moved only if still that version).
    A lost race for a number re-reads the counter and tries the next one; a
    lost race for the invoice itself (someone else finalized it, or the
    subscription moved) raises Conflict for the caller to re-read.
    `then`: the status it is finalized to: open, or paid when nothing is
    due (a zero invoice is paid at once; it still takes its number).
    On success the record holds its number, that status and its new version."""
    if then not in ("open", "paid"):
        raise ValueError("an invoice is finalized open, or paid when nothing is due")
    expected = record.version
    for _ in range(FINALIZE_ATTEMPTS):
        sequence = last_number(record.merchant_id, year) + 1
        counter = InvoiceCounterRecord(*InvoiceCounterRecord.key(record.merchant_id, year), last=sequence)
        record.number = format_number(prefix, year, sequence)
        record.status = then
        record.finalized_at = finalized_at
        record.version = expected + (0 if new else 1)
        record.sync_keys()
        try:
            with transaction() as write:
                if sequence == 1:
                    write.save(counter, condition=InvoiceCounterRecord.pk.does_not_exist())
                else:
                    write.save(counter, condition=InvoiceCounterRecord.last == sequence - 1)
                if new:
                    write.save(record, condition=InvoiceRecord.pk.does_not_exist())
                else:
                    write.save(
                        record,
                        condition=(InvoiceRecord.version == expected) & (InvoiceRecord.status == "draft"),
                    )
                if also is not None:
                    also(write)
            return Finalized(record.number, True)
        except TransactWriteError as error:
            record.number, record.status, record.finalized_at, record.version = None, "draft", None, expected
            record.sync_keys()
            if not is_condition_failure(error):
                raise
            if _lost_race_for_number(error, record.merchant_id, year, sequence):
                time.sleep(random.uniform(0.005, 0.05))
                continue
            raise Conflict("the invoice or its subscription changed meanwhile", code="version_conflict") from error
    raise Conflict("too many invoices were finalized at once for this merchant; retry", code="version_conflict")


def _lost_race_for_number(error: TransactWriteError, merchant_id: str, year: int, sequence: int) -> bool:
    """Whether a cancelled finalization only lost the race for the number
    (another transaction took it, or was writing the counter at the same
    moment), as opposed to the invoice or the subscription having changed.

    Cancellation reasons come in PynamoDB's order of items (grouped by
    kind), not ours, so the counter is simply read again: if it moved, the
    number was taken and the next one is tried."""
    reasons = getattr(error, "cancellation_reasons", None) or []
    if any(reason is not None and reason.code == "TransactionConflict" for reason in reasons):
        return True
    return last_number(merchant_id, year) != sequence - 1


def save(record: InvoiceRecord, *, expected_status: str | Iterable[str] | None = None,
         also: Callable | None = None) -> None:
    """Write a changed invoice if nobody changed it since it was read (its
    version), and, when given, if it is still in one of `expected_status`.
    `also(write)` adds writes that must happen with it or not at all (the
    customer's credit balance, a credit note, a payment): one transaction.
    Conflict otherwise: the caller re-reads and decides again."""
    expected = record.version
    record.version = expected + 1
    record.sync_keys()
    condition = InvoiceRecord.version == expected
    if expected_status is not None:
        statuses = [expected_status] if isinstance(expected_status, str) else list(expected_status)
        condition = condition & InvoiceRecord.status.is_in(*statuses)
    try:
        if also is None:
            record.save(condition=condition)
        else:
            with transaction() as write:
                write.save(record, condition=condition)
                also(write)
    except (PutError, TransactWriteError) as error:
        record.version = expected
        if is_condition_failure(error):
            raise Conflict("the invoice was changed meanwhile; read it again", code="version_conflict") from error
        raise


def advance_without_invoice(subscription, entry, billed: Iterable[BilledUsageRecord]) -> None:
    """A boundary that bills nothing (paused, nothing queued) still moves the
    subscription on, with the usage it recorded as billed (or free)."""
    from chalicelib.store import subscriptions as subscription_store

    version_read = int(subscription.version)
    try:
        with transaction() as write:
            subscription_store.save_subscription(subscription, entry, write=write)
            for record in billed:
                write_billed_usage(write, record)
    except TransactWriteError as error:
        subscription.version = version_read
        subscription_store.raise_version_conflict(error)
        raise


def billed_usage_record(
    merchant_id: str, subscription_id: str, period_start: str, usage: dict[str, MeterUsage], invoice_id: str | None,
    *, plan: dict, free: bool = False, previous: BilledUsageRecord | None = None,
) -> BilledUsageRecord:
    """The billed-usage record of a period once `invoice_id` (None: no
    invoice, e.g. a trial) billed it up to `usage`."""
    invoices = json.loads(previous.invoices) if previous is not None else []
    if invoice_id is not None and invoice_id not in invoices:
        invoices.append(invoice_id)
    return BilledUsageRecord(
        *BilledUsageRecord.key(merchant_id, subscription_id, period_start),
        usage=usage_to_json(usage),
        plan=json.dumps(plan, sort_keys=True, separators=(",", ":")),
        free=free,
        invoices=json.dumps(invoices),
        version=(previous.version + 1) if previous is not None else 1,
    )


def write_billed_usage(write, record: BilledUsageRecord) -> None:
    """Add the billed usage of a period to a finalizing transaction: created
    once, then only moved on from the version that was read."""
    if record.version == 1:
        write.save(record, condition=BilledUsageRecord.pk.does_not_exist())
    else:
        write.save(record, condition=BilledUsageRecord.version == record.version - 1)
