"""The two renderings of the ledger's entries (domain/ledger.py): the
journal CSV and the French FEC (Fichier des écritures comptables, article
A47 A-1 of the Livre des procédures fiscales). Pure.

Entry numbers: per journal and month, in date order then by the fact's key
(`VE202611-00001`); entries in another currency than the books' carry it in
their series (`VEUSD202611-00001`), so each currency's series is gapless
and the FEC of the books' currency has no hole.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from chalicelib.domain.ledger import ACCOUNT_LABELS, CUSTOMER_ROLES, JOURNALS, Entry
from chalicelib.domain.money import format_amount

JOURNAL_COLUMNS = (
    "date", "journal", "entry_number", "account", "account_label", "customer_account", "label", "debit",
    "credit", "piece_ref", "currency",
)
FEC_COLUMNS = (
    "JournalCode", "JournalLib", "EcritureNum", "EcritureDate", "CompteNum", "CompteLib", "CompAuxNum",
    "CompAuxLib", "PieceRef", "PieceDate", "EcritureLib", "Debit", "Credit", "EcritureLet", "DateLet",
    "ValidDate", "Montantdevise", "Idevise",
)


def numbered(entries: Iterable[Entry], book_currency: str) -> list[tuple[str, Entry]]:
    """(entry number, entry), in date order then by key."""
    counters: dict[str, int] = {}
    result = []
    for entry in sorted(entries, key=lambda e: (e.day, e.key)):
        series = entry.journal + ("" if entry.currency == book_currency else entry.currency)
        series += f"{entry.day.year:04d}{entry.day.month:02d}"
        counters[series] = counters.get(series, 0) + 1
        result.append((f"{series}-{counters[series]:05d}", entry))
    return result


def journal_rows(entries: Iterable[tuple[str, Entry]], accounts: Mapping[str, str]) -> Iterable[list[str]]:
    for number, entry in entries:
        for line in entry.lines:
            yield [
                entry.day.isoformat(), entry.journal, number, accounts[line.role], ACCOUNT_LABELS[line.role],
                entry.customer_id if line.role in CUSTOMER_ROLES else "", entry.label,
                format_amount(line.debit, entry.currency), format_amount(line.credit, entry.currency),
                entry.piece_ref, entry.currency,
            ]


def fec_rows(entries: Iterable[tuple[str, Entry]], accounts: Mapping[str, str], book_currency: str
             ) -> Iterable[list[str]]:
    """FEC lines of the entries in `book_currency` (amounts are never
    converted: another currency's entries have no place in these books)."""
    for number, entry in entries:
        if entry.currency != book_currency:
            continue
        day = _fec_date(entry.day)
        for line in entry.lines:
            customer = line.role in CUSTOMER_ROLES
            yield [
                entry.journal, JOURNALS[entry.journal], number, day, accounts[line.role],
                ACCOUNT_LABELS[line.role], entry.customer_id if customer else "",
                _text(entry.customer_name) if customer else "", _text(entry.piece_ref), _fec_date(entry.piece_day),
                _text(entry.label), _fec_amount(line.debit, entry.currency), _fec_amount(line.credit, entry.currency),
                "", "", day, "", "",
            ]


def _fec_date(day) -> str:
    return day.strftime("%Y%m%d")


def _fec_amount(amount, currency: str) -> str:
    return format_amount(amount, currency).replace(".", ",")


def _text(value: str) -> str:
    """A FEC field holds no tab nor line break (they separate fields and lines)."""
    return " ".join(value.replace("\t", " ").split())
