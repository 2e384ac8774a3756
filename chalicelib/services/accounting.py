"""The books: revenue recognition and the accounting exports (journal CSV,
FEC), fed from the billing table's stream with the other report figures.

What an invoice's change adds (`invoice_books_change`, called by the report
feed for each invoice record of the stream): the change of its revenue
figures per month (domain/revenue.py: new contribution less old, added once
with the other figures, in the same transaction as the feed's marker) and
the ledger entries it makes (domain/ledger.py, one item per entry keyed by
its fact, so rewritten identically when a record comes again).

Reads are bounded whatever the history: the revenue report is one Query of
the month items up to the month (deferred revenue is invoiced - credited -
recognised to date), a month's journal one Query of its ledger partition, a
year's FEC twelve. Everything the feed has not seen (invoices issued before
it counted revenue) is not in the books.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

from chalicelib.domain import ledger, ledger_files, revenue
from chalicelib.domain import reports as report_rules
from chalicelib.domain.books import BookInvoice, book_invoice
from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.money import is_known_currency
from chalicelib.store import ledger as ledger_store
from chalicelib.store import reports as report_store

YEAR = re.compile(r"^\d{4}$")


# ---------------------------------------------------------------------------
# The feed


def books_of(image: dict | None) -> BookInvoice | None:
    """The books' view of an invoice from a stream image (None: not issued)."""
    if not image:
        return None
    from chalicelib.services.invoices import serialize
    from chalicelib.store.invoices import InvoiceRecord

    record = InvoiceRecord.from_raw_data(image)
    invoice = serialize(record)
    invoice["customer_name"] = record.party("buyer").get("name") or ""
    invoice["credit_note_entries"] = record.credit_note_entries()
    invoice["payment_entries"] = record.payment_entries()
    invoice["payment_attempts"] = record.attempts()
    return book_invoice(invoice, record.party("seller").get("timezone"))


def invoice_books_change(old: dict | None, new: dict | None) -> tuple[dict[tuple[str, str], Decimal], list]:
    """(revenue figures to add, ledger entries to write) for one change of an invoice."""
    before, after = books_of(old), books_of(new)
    figures: dict[tuple[str, str], Decimal] = {}
    for sign, books in ((-1, before), (1, after)):
        if books is None:
            continue
        for month, amounts in revenue.contribution(books).items():
            sk = report_store.earned_sk(month, books.currency)
            for name, amount in amounts.items():
                figures[(sk, name)] = figures.get((sk, name), Decimal(0)) + sign * amount
    old_entries = {e.key: e for e in ledger.invoice_entries(before)}
    entries = [e for e in ledger.invoice_entries(after) if old_entries.get(e.key) != e]
    return {k: v for k, v in figures.items() if v}, entries


def write_entries(merchant_id: str, entries: list) -> None:
    if entries:
        ledger_store.put_entries(merchant_id, entries)


# ---------------------------------------------------------------------------
# GET /reports/revenue


def revenue_report(merchant_id: str, month: str | None) -> dict:
    month = report_rules.parse_month(month)
    return revenue.report(month, report_store.earned_until(merchant_id, month))


# ---------------------------------------------------------------------------
# GET /exports/journal.csv, GET /exports/fec.txt


def _merchant(merchant_id: str):
    from chalicelib.store import merchants

    return merchants.get_merchant(merchant_id)


def _entries(merchant_id: str, months: list[str]) -> Iterator:
    for month in months:
        yield from ledger_store.entries_of_month(merchant_id, month)


def journal_export(merchant_id: str, month: str | None, *, compress: bool) -> bytes:
    """The month's journal entries as CSV, one row per line."""
    from chalicelib.services.exports import write_export

    month = report_rules.parse_month(month)
    merchant = _merchant(merchant_id)
    accounts = ledger.accounts_map(merchant_accounts(merchant))
    entries = ledger_files.numbered(_entries(merchant_id, [month]), merchant.default_currency)
    return write_export(ledger_files.JOURNAL_COLUMNS, ledger_files.journal_rows(entries, accounts),
                        compress=compress)


def fec_export(merchant_id: str, year: str | None, month: str | None, *, compress: bool) -> tuple[bytes, str]:
    """The FEC of a year (or of one of its months, `month`), in the
    merchant's default currency, and its file name
    (`{SIREN}FEC{YYYYMMDD}.txt`, the last day covered)."""
    from chalicelib.services.exports import write_export

    if not isinstance(year, str) or not YEAR.match(year) or year < "2000":
        raise InvalidRequest("year: a year as YYYY (e.g. 2026)", param="year")
    if month is not None:
        month = report_rules.parse_month(month)
        if month[:4] != year:
            raise InvalidRequest(f"month: a month of {year} (YYYY-MM)", param="month")
        months = [month]
    else:
        months = [f"{year}-{m:02d}" for m in range(1, 13)]
    merchant = _merchant(merchant_id)
    currency = merchant.default_currency
    if not is_known_currency(currency):  # never expected: the merchant's currency is checked when set
        raise InvalidRequest("default_currency: unknown", param="default_currency")
    accounts = ledger.accounts_map(merchant_accounts(merchant))
    entries = ledger_files.numbered(_entries(merchant_id, months), currency)
    body = write_export(ledger_files.FEC_COLUMNS, ledger_files.fec_rows(entries, accounts, currency),
                        compress=compress, delimiter="\t")
    last = revenue.first_day(revenue.next_month(months[-1])) - timedelta(days=1)
    siren = (merchant.siren or "").replace(" ", "") or "000000000"
    return body, f"{siren}FEC{last.strftime('%Y%m%d')}.txt"


def merchant_accounts(merchant) -> dict[str, str]:
    """The merchant's own account numbers (the roles it set)."""
    return merchant.account_table()
