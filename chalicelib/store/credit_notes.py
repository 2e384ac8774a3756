"""Credit notes and their gapless numbers, in the billing table.

A credit note is one item, `pk = {merchant_id}#{credit_note_id}`,
`sk = credit_note`: its lines and tax as JSON text, every amount a decimal
string, and, when it refunds a card, the Stripe refund's id and status.

It sits in two indexes:
- `gsi1` (`{merchant}#{customer_id}`, `credit_note#{id}`): its customer's
  item collection (store/customers.py), so the listing by customer (or by
  one of its invoices, filtered there) reads only that customer's items,
  newest first (ids are time-sortable);
- `gsi2` (`{merchant}#credit_notes`, `{id}`): the merchant's listing.

Numbers: `{merchant}#credit_note_counter` / `counter#{YYYY}` holds the last
number given in a year, a series of its own beside the invoices'. Issuing a
credit note is ONE transaction of the counter moved from n-1 to n, the
credit note put (`attribute_not_exists`) with number n, the invoice moved
on from the version that was read (its amount due, its credited total), and
whatever the caller adds (the customer's credit balance): a number is given
exactly when a credit note exists, never skipped, never given twice.
"""
from __future__ import annotations

import random
import re
import time
from typing import Callable, Iterable

from pynamodb.attributes import BooleanAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex

from chalicelib.domain.errors import Conflict, InvalidRequest
from chalicelib.store.base import AuditedRecord, BillingRecord, decode_cursor, page, transaction
from chalicelib.store.customers import CustomerCollection, collection_pk, collection_sk
from chalicelib.store.errors import is_condition_failure
from chalicelib.store.invoices import InvoiceRecord, IssuedDocument

CREDIT_NOTE_SK = "credit_note"
CREDIT_NOTE_ID = re.compile(r"^cn_[0-9a-z]{26}$")
# Re-reads of the counter after losing the race for a number (as invoices).
ISSUE_ATTEMPTS = 8


def credit_note_pk(merchant_id: str, credit_note_id: str) -> str:
    return f"{merchant_id}#{credit_note_id}"


def listing_pk(merchant_id: str) -> str:
    return f"{merchant_id}#credit_notes"


def format_number(prefix: str, year: int, sequence: int) -> str:
    """`{prefix}CN{YYYY}-{000001}`: the merchant's invoice prefix, its own series."""
    return f"{prefix}CN{year:04d}-{sequence:06d}"


class CreditNotesOfMerchant(GlobalSecondaryIndex):
    class Meta:
        index_name = "gsi2"
        projection = AllProjection()

    gsi2pk = UnicodeAttribute(hash_key=True)
    gsi2sk = UnicodeAttribute(range_key=True)


class CreditNoteRecord(IssuedDocument, AuditedRecord):
    merchant_id = UnicodeAttribute()
    credit_note_id = UnicodeAttribute()
    number = UnicodeAttribute(null=True)
    invoice_id = UnicodeAttribute()
    invoice_number = UnicodeAttribute(null=True)
    customer_id = UnicodeAttribute()
    subscription_id = UnicodeAttribute(null=True)
    currency = UnicodeAttribute()
    reason = UnicodeAttribute()
    memo = UnicodeAttribute(null=True)
    # JSON text: [{"invoice_line_id", "description", "amount"}], pre-tax amounts.
    lines = UnicodeAttribute()
    # JSON text: [{"rate", "amount"}], at the invoice's rates.
    tax = UnicodeAttribute()
    subtotal = UnicodeAttribute()
    tax_amount = UnicodeAttribute()
    total = UnicodeAttribute()
    # What the invoice's status was: open (amount due lowered) or paid.
    invoice_status = UnicodeAttribute()
    # card, credit_balance or none; for card: pending, succeeded, failed.
    refund = UnicodeAttribute()
    refund_status = UnicodeAttribute(null=True)
    refund_id = UnicodeAttribute(null=True)
    refund_failure = UnicodeAttribute(null=True)
    payment_intent = UnicodeAttribute(null=True)
    reverse_charge = BooleanAttribute(default=False)
    # JSON text: seller and buyer as on the invoice.
    seller = UnicodeAttribute(null=True)
    buyer = UnicodeAttribute(null=True)
    locale = UnicodeAttribute(default="en")
    # A digest of the Idempotency-Key of the request that made it.
    request = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    gsi1pk = UnicodeAttribute()
    gsi1sk = UnicodeAttribute()
    gsi2pk = UnicodeAttribute()
    gsi2sk = UnicodeAttribute()
    version = NumberAttribute(default=1)

    customer_collection = CustomerCollection()
    by_merchant = CreditNotesOfMerchant()

    @staticmethod
    def key(merchant_id: str, credit_note_id: str) -> tuple[str, str]:
        return credit_note_pk(merchant_id, credit_note_id), CREDIT_NOTE_SK

    def sync_keys(self) -> None:
        self.gsi1pk = collection_pk(self.merchant_id, self.customer_id)
        self.gsi1sk = collection_sk("credit_note", self.credit_note_id)
        self.gsi2pk = listing_pk(self.merchant_id)
        self.gsi2sk = self.credit_note_id


class CreditNoteCounterRecord(BillingRecord):
    """The last credit note number given in a year."""

    last = NumberAttribute()

    @staticmethod
    def key(merchant_id: str, year: int) -> tuple[str, str]:
        return f"{merchant_id}#credit_note_counter", f"counter#{year:04d}"


# ---------------------------------------------------------------------------
# Reads


def find_credit_note(merchant_id: str, credit_note_id: str) -> CreditNoteRecord | None:
    if not isinstance(credit_note_id, str) or not CREDIT_NOTE_ID.match(credit_note_id):
        return None
    try:
        return CreditNoteRecord.get(*CreditNoteRecord.key(merchant_id, credit_note_id), consistent_read=True)
    except DoesNotExist:
        return None


def last_number(merchant_id: str, year: int) -> int:
    try:
        return int(CreditNoteCounterRecord.get(*CreditNoteCounterRecord.key(merchant_id, year),
                                               consistent_read=True).last)
    except DoesNotExist:
        return 0


def customer_credit_notes(merchant_id: str, customer_id: str, *, limit: int, cursor: str | None = None,
                          invoice_id: str | None = None) -> tuple[list[CreditNoteRecord], str | None]:
    """A page of one customer's credit notes, newest first, optionally only
    one invoice's (filtered inside the customer's own collection)."""
    partition = collection_pk(merchant_id, customer_id)
    start = decode_cursor(cursor, merchant_id)
    if start is not None and start.get("gsi1pk", {}).get("S") != partition:
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    query = CreditNoteRecord.customer_collection.query(
        partition,
        CreditNoteRecord.gsi1sk.startswith("credit_note#"),
        filter_condition=None if invoice_id is None else CreditNoteRecord.invoice_id == invoice_id,
        scan_index_forward=False,
        limit=limit + 1,
        last_evaluated_key=start,
    )
    return page(query, limit)


def merchant_credit_notes(merchant_id: str, *, limit: int, cursor: str | None = None,
                          ) -> tuple[list[CreditNoteRecord], str | None]:
    """A page of the merchant's credit notes, newest first."""
    partition = listing_pk(merchant_id)
    start = decode_cursor(cursor, merchant_id)
    if start is not None and start.get("gsi2pk", {}).get("S") != partition:
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    query = CreditNoteRecord.by_merchant.query(
        partition, scan_index_forward=False, limit=limit + 1, last_evaluated_key=start,
    )
    return page(query, limit)


# ---------------------------------------------------------------------------
# Writes


def issue(note: CreditNoteRecord, invoice: InvoiceRecord, *, prefix: str, year: int,
          expected_status: Iterable[str], before_write: Callable[[str], None],
          also: Callable | None = None) -> str:
    """Give the credit note the merchant's next credit note number and write
    it with the invoice as changed by the caller (if the invoice is still the
    version that was read, in one of `expected_status`), in one transaction
    with the counter and `also(write)`.

    `before_write(number)` is called before each attempt, so the caller can
    put the number where it shows (the invoice's list of its credit notes).
    A lost race for a number re-reads the counter and takes the next one; a
    changed invoice (or credit balance) is Conflict, for the caller to read
    again and decide again. Returns the number."""
    statuses = list(expected_status)
    expected = int(invoice.version)
    note.sync_keys()
    for _ in range(ISSUE_ATTEMPTS):
        sequence = last_number(note.merchant_id, year) + 1
        number = format_number(prefix, year, sequence)
        note.number = number
        before_write(number)
        invoice.version = expected + 1
        invoice.sync_keys()
        counter = CreditNoteCounterRecord(*CreditNoteCounterRecord.key(note.merchant_id, year), last=sequence)
        try:
            with transaction() as write:
                if sequence == 1:
                    write.save(counter, condition=CreditNoteCounterRecord.pk.does_not_exist())
                else:
                    write.save(counter, condition=CreditNoteCounterRecord.last == sequence - 1)
                write.save(note, condition=CreditNoteRecord.pk.does_not_exist())
                write.save(invoice, condition=(InvoiceRecord.version == expected)
                           & InvoiceRecord.status.is_in(*statuses))
                if also is not None:
                    also(write)
            return number
        except TransactWriteError as error:
            invoice.version = expected
            note.number = None
            if not is_condition_failure(error):
                raise
            if _lost_race_for_number(error, note.merchant_id, year, sequence):
                time.sleep(random.uniform(0.005, 0.05))
                continue
            raise Conflict("the invoice was changed meanwhile; read it again", code="version_conflict") from error
    raise Conflict("too many credit notes were issued at once for this merchant; retry", code="version_conflict")


def _lost_race_for_number(error: TransactWriteError, merchant_id: str, year: int, sequence: int) -> bool:
    """Whether a cancelled issue only lost the race for the number (the
    counter moved, or was being written at the same moment); cancellation
    reasons follow PynamoDB's order of items, so the counter is read again."""
    reasons = getattr(error, "cancellation_reasons", None) or []
    if any(reason is not None and reason.code == "TransactionConflict" for reason in reasons):
        return True
    return last_number(merchant_id, year) != sequence - 1


def record_refund(note: CreditNoteRecord, *, status: str, refund_id: str | None,
                  failure: str | None = None) -> bool:
    """Write the outcome of the credit note's card refund, once: only while
    it is still `pending` (False when someone recorded it first)."""
    actions = [CreditNoteRecord.refund_status.set(status), CreditNoteRecord.version.add(1)]
    actions.append(CreditNoteRecord.refund_id.set(refund_id) if refund_id else CreditNoteRecord.refund_id.remove())
    if failure:
        actions.append(CreditNoteRecord.refund_failure.set(failure))
    try:
        note.update(actions=actions, condition=CreditNoteRecord.refund_status == "pending")
    except UpdateError as error:
        if is_condition_failure(error):
            return False
        raise
    return True
