"""Accruals of payees and their monthly statements, in the billing table.

- `{merchant}#{payee}#accrued` / `{invoice or credit note id}#{key}`: the
  marker of one accrual (a payee's share of one invoice line, or of a new
  subscription) or reversal (of one credit note): its existence is the
  accrual's uniqueness, whatever month it is booked in.
- `{merchant}#{payee}#statement#{YYYY-MM}` / `line#{invoice}#{source}#{key}`:
  the accrual line booked in a month's statement (`source` is `accrual`, or
  the credit note's id for a reversal), so a statement's lines are one
  consistent Query, grouped by invoice.
- same partition / `statement`: the statement's head: `draft`, `issued`
  (number, totals frozen), `paid` (payout reference); `revision` counts the
  lines booked in it.

Booking one accrual is ONE transaction: the marker put if absent, the line
put, and the head's revision bumped on condition that the statement is
still a draft. A redelivered event or a concurrent payment finds the marker
and writes nothing; an accrual that arrives for an issued month is booked in
the next draft month. Issuing is one transaction of the merchant's
statement counter moved from n-1 to n (`{merchant}#statement_counter` /
`counter#{YYYY}`, the gapless pattern of invoices and credit notes) and the
head moved to `issued` on condition that its revision is the one whose lines
were summed: a line booked meanwhile makes the issue retry, never miss it.
"""
from __future__ import annotations

import json
import random
import time

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError

from chalicelib.domain.errors import Conflict
from chalicelib.store.base import BillingRecord, transaction
from chalicelib.store.errors import is_condition_failure

STATEMENT_SK = "statement"
# Months an accrual walks forward past issued statements (two years).
BOOKING_MONTHS = 24
ISSUE_ATTEMPTS = 8


def marker_pk(merchant_id: str, payee_id: str) -> str:
    return f"{merchant_id}#{payee_id}#accrued"


def statement_pk(merchant_id: str, payee_id: str, month: str) -> str:
    return f"{merchant_id}#{payee_id}#statement#{month}"


class AccrualMarker(BillingRecord):
    month = UnicodeAttribute()

    @staticmethod
    def key(merchant_id: str, payee_id: str, source_id: str, key: str) -> tuple[str, str]:
        return marker_pk(merchant_id, payee_id), f"{source_id}#{key}"


class AccrualLine(BillingRecord):
    merchant_id = UnicodeAttribute()
    payee_id = UnicodeAttribute()
    month = UnicodeAttribute()
    kind = UnicodeAttribute()  # accrual | reversal
    invoice_id = UnicodeAttribute()
    invoice_number = UnicodeAttribute(null=True)
    credit_note_id = UnicodeAttribute(null=True)
    credit_note_number = UnicodeAttribute(null=True)
    customer_id = UnicodeAttribute(null=True)
    subscription_id = UnicodeAttribute(null=True)
    # The invoice line's id, or `new_subscription`.
    key = UnicodeAttribute()
    description = UnicodeAttribute(default="")
    currency = UnicodeAttribute()
    base_amount = UnicodeAttribute()
    # Decimal strings, never floats.
    amount = UnicodeAttribute()
    # JSON text: the rules' parts ({rule, basis, base, rate}); a reversal's fraction.
    detail = UnicodeAttribute(default="{}")
    booked_at = UnicodeAttribute()

    @staticmethod
    def key_of(merchant_id: str, payee_id: str, month: str, invoice_id: str, source: str,
               key: str) -> tuple[str, str]:
        return statement_pk(merchant_id, payee_id, month), f"line#{invoice_id}#{source}#{key}"

    def details(self) -> dict:
        return json.loads(self.detail or "{}")


class StatementRecord(BillingRecord):
    merchant_id = UnicodeAttribute(null=True)
    payee_id = UnicodeAttribute(null=True)
    month = UnicodeAttribute(null=True)
    status = UnicodeAttribute(default="draft")
    revision = NumberAttribute(default=0)
    number = UnicodeAttribute(null=True)
    # JSON text, frozen at issue: {currency: total}, and the lines' count.
    totals = UnicodeAttribute(null=True)
    line_count = NumberAttribute(null=True)
    issued_at = UnicodeAttribute(null=True)
    paid_at = UnicodeAttribute(null=True)
    reference = UnicodeAttribute(null=True)

    @staticmethod
    def key(merchant_id: str, payee_id: str, month: str) -> tuple[str, str]:
        return statement_pk(merchant_id, payee_id, month), STATEMENT_SK

    def total_table(self) -> dict[str, str]:
        return json.loads(self.totals or "{}")


class StatementCounterRecord(BillingRecord):
    """The last statement number given in a year."""

    last = NumberAttribute()

    @staticmethod
    def key(merchant_id: str, year: int) -> tuple[str, str]:
        return f"{merchant_id}#statement_counter", f"counter#{year:04d}"


# ---------------------------------------------------------------------------
# Reads


def get_statement(merchant_id: str, payee_id: str, month: str) -> StatementRecord | None:
    try:
        return StatementRecord.get(*StatementRecord.key(merchant_id, payee_id, month), consistent_read=True)
    except DoesNotExist:
        return None


def statement_lines(merchant_id: str, payee_id: str, month: str) -> list[AccrualLine]:
    """Every line booked in a month's statement, grouped by invoice (one consistent Query, paged)."""
    return list(AccrualLine.query(statement_pk(merchant_id, payee_id, month), AccrualLine.sk.startswith("line#"),
                                  consistent_read=True))


def is_accrued(merchant_id: str, payee_id: str, source_id: str, key: str) -> bool:
    try:
        AccrualMarker.get(*AccrualMarker.key(merchant_id, payee_id, source_id, key), consistent_read=True)
    except DoesNotExist:
        return False
    return True


def last_number(merchant_id: str, year: int) -> int:
    try:
        return int(StatementCounterRecord.get(*StatementCounterRecord.key(merchant_id, year),
                                              consistent_read=True).last)
    except DoesNotExist:
        return 0


# ---------------------------------------------------------------------------
# Writes


def book(line: AccrualLine, source_id: str, month: str, next_month) -> str | None:
    """Book an accrual line once (module docstring): in `month`, or the first
    draft month after it. Returns the month it was booked in, or None when
    it was booked before (its marker exists)."""
    merchant_id, payee_id = line.merchant_id, line.payee_id
    for _ in range(BOOKING_MONTHS):
        marker = AccrualMarker(*AccrualMarker.key(merchant_id, payee_id, source_id, line.key), month=month)
        line.pk, line.sk = AccrualLine.key_of(merchant_id, payee_id, month, line.invoice_id,
                                              "accrual" if line.kind == "accrual" else line.credit_note_id,
                                              line.key)
        line.month = month
        head = StatementRecord(*StatementRecord.key(merchant_id, payee_id, month))
        try:
            with transaction() as write:
                write.save(marker, condition=AccrualMarker.pk.does_not_exist())
                write.save(line, condition=AccrualLine.pk.does_not_exist())
                write.update(head, actions=[
                    StatementRecord.revision.set((StatementRecord.revision | 0) + 1),
                    StatementRecord.status.set(StatementRecord.status | "draft"),
                    StatementRecord.merchant_id.set(merchant_id), StatementRecord.payee_id.set(payee_id),
                    StatementRecord.month.set(month),
                ], condition=StatementRecord.pk.does_not_exist() | (StatementRecord.status == "draft"))
            return month
        except TransactWriteError as error:
            if not is_condition_failure(error):
                raise
            reasons = getattr(error, "cancellation_reasons", None) or []
            codes = [getattr(reason, "code", None) if reason is not None else None for reason in reasons]
            if codes and codes[0] == "ConditionalCheckFailed":
                return None  # booked before
            if "TransactionConflict" in codes or not codes:
                if is_accrued(merchant_id, payee_id, source_id, line.key):
                    return None
                time.sleep(random.uniform(0.005, 0.05))
                continue
            month = next_month(month)  # the statement is issued: the next month takes it
    raise Conflict("no draft statement to book the accrual in", code="statement_issued")


def issue(merchant_id: str, payee_id: str, month: str, *, revision: int | None, year: int, prefix: str,
          totals: dict[str, str], line_count: int, issued_at: str, number_of) -> str:
    """Number the month's statement and move it to `issued`, if its revision
    is still `revision` (None: no head yet). Returns the number; Conflict
    `version_conflict` when a line was booked meanwhile (sum again)."""
    for _ in range(ISSUE_ATTEMPTS):
        sequence = last_number(merchant_id, year) + 1
        number = number_of(prefix, year, sequence)
        counter = StatementCounterRecord(*StatementCounterRecord.key(merchant_id, year), last=sequence)
        head = StatementRecord(*StatementRecord.key(merchant_id, payee_id, month))
        condition = (StatementRecord.pk.does_not_exist() if revision is None
                     else (StatementRecord.revision == revision) & (StatementRecord.status == "draft"))
        try:
            with transaction() as write:
                if sequence == 1:
                    write.save(counter, condition=StatementCounterRecord.pk.does_not_exist())
                else:
                    write.save(counter, condition=StatementCounterRecord.last == sequence - 1)
                write.update(head, actions=[
                    StatementRecord.status.set("issued"), StatementRecord.number.set(number),
                    StatementRecord.totals.set(json.dumps(totals, sort_keys=True)),
                    StatementRecord.line_count.set(line_count), StatementRecord.issued_at.set(issued_at),
                    StatementRecord.merchant_id.set(merchant_id), StatementRecord.payee_id.set(payee_id),
                    StatementRecord.month.set(month),
                ], condition=condition)
            return number
        except TransactWriteError as error:
            if not is_condition_failure(error):
                raise
            if last_number(merchant_id, year) != sequence - 1:
                time.sleep(random.uniform(0.005, 0.05))
                continue  # lost the race for the number
            raise Conflict("the statement changed meanwhile; read it again", code="version_conflict") from error
    raise Conflict("too many statements were issued at once for this merchant; retry", code="version_conflict")


def mark_paid(merchant_id: str, payee_id: str, month: str, *, reference: str, paid_at: str) -> bool:
    """Move an issued statement to `paid` with its payout reference; False when it is not issued."""
    head = StatementRecord(*StatementRecord.key(merchant_id, payee_id, month))
    try:
        head.update(actions=[StatementRecord.status.set("paid"), StatementRecord.reference.set(reference),
                             StatementRecord.paid_at.set(paid_at)],
                    condition=StatementRecord.status == "issued")
    except UpdateError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def statement_of(pk: str, sk: str) -> tuple[str, str, str] | None:
    """(merchant, payee, month) of a statement head's key, or None for any other record."""
    if sk != STATEMENT_SK:
        return None
    merchant_id, _, rest = pk.partition("#")
    payee_id, _, month = rest.partition("#statement#")
    if not merchant_id.startswith("mer_") or not payee_id.startswith("pye_") or len(month) != 7:
        return None
    return merchant_id, payee_id, month
