"""The double-entry rule (domain/ledger.py) and its two renderings
(domain/ledger_files.py): each fact's entry by hand, every entry balanced
(hypothesis), the FEC's 18 columns and number formats."""
from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain import ledger, ledger_files
from chalicelib.domain.books import BookCreditNote, BookInvoice, BookLine, BookPayment

D = Decimal
NOV = date(2026, 11, 1)


def book(*, lines=(("fee", "100.00"), ("usage", "20.00")), tax="24.00", credit_applied="0.00", notes=(),
         payments=(), voided=None, currency="EUR") -> BookInvoice:
    book_lines = tuple(BookLine(f"il_{i}", kind, "", D(a), NOV, date(2026, 12, 1)) for i, (kind, a) in enumerate(lines))
    subtotal = sum((line.amount for line in book_lines), D(0))
    return BookInvoice("inv_1", "OD2026-000001", currency, "cus_1", "Jean Dupont", NOV, voided, book_lines,
                       subtotal, D(tax), subtotal + D(tax), D(credit_applied), tuple(notes), tuple(payments))


def lines_of(entry) -> list[tuple[str, str, str]]:
    return [(line.role, str(line.debit), str(line.credit)) for line in entry.lines]


def test_an_invoice_debits_the_customer_and_credits_revenue_and_vat():
    [entry] = ledger.invoice_entries(book())
    assert (entry.journal, entry.day, entry.piece_ref, entry.key) == ("VE", NOV, "OD2026-000001", "inv_1#invoice")
    assert lines_of(entry) == [("customers", "144.00", "0"), ("revenue", "0", "120.00"),
                               ("vat_collected", "0", "24.00")]
    assert entry.label == "Facture OD2026-000001 Jean Dupont"


def test_credit_lines_go_to_discounts_and_a_credit_balance_used_moves_from_419():
    [entry] = ledger.invoice_entries(book(lines=(("fee", "100.00"), ("credit", "-30.00")), tax="14.00",
                                          credit_applied="50.00"))
    assert lines_of(entry) == [("customers", "34.00", "0"), ("revenue", "0", "100.00"),
                               ("discounts", "30.00", "0"), ("vat_collected", "0", "14.00"),
                               ("customer_credit", "50.00", "0")]


def test_a_negative_invoice_becomes_the_customers_credit():
    [entry] = ledger.invoice_entries(book(lines=(("credit", "-50.00"),), tax="-10.00"))
    assert lines_of(entry) == [("discounts", "50.00", "0"), ("vat_collected", "10.00", "0"),
                               ("customer_credit", "0", "60.00")]


def test_a_credit_note_refunded_to_the_card_makes_two_entries():
    credit = BookCreditNote("cn_1", "ODCN2026-000001", date(2026, 11, 20), D("50.00"), D("10.00"), D("60.00"),
                            "card", {"il_0": D("50.00")})
    _, note, refund = ledger.invoice_entries(book(notes=[credit]))
    assert lines_of(note) == [("customers", "0", "60.00"), ("discounts", "50.00", "0"), ("vat_collected", "10.00", "0")]
    assert (refund.journal, lines_of(refund)) == ("BQ", [("customers", "60.00", "0"), ("bank", "0", "60.00")])


def test_a_credit_note_to_the_credit_balance_credits_419():
    credit = BookCreditNote("cn_1", "ODCN2026-000001", date(2026, 11, 20), D("50.00"), D("10.00"), D("60.00"),
                            "credit_balance", {})
    _, note = ledger.invoice_entries(book(notes=[credit]))
    assert lines_of(note) == [("discounts", "50.00", "0"), ("vat_collected", "10.00", "0"),
                              ("customer_credit", "0", "60.00")]


def test_payments_by_method_and_an_overpayment_to_the_credit_balance():
    payments = [BookPayment("pay_1", "cash", date(2026, 11, 3), D("44.00"), D("44.00"), D("0"), ""),
                BookPayment("pay_2", "cheque", date(2026, 11, 4), D("110.00"), D("100.00"), D("10.00"), "CHQ 42"),
                BookPayment("pi_1", "card", date(2026, 11, 5), D("0.01"), D("0.01"), D("0"), "pi_1")]
    _, cash, cheque, card = ledger.invoice_entries(book(payments=payments))
    assert (cash.journal, lines_of(cash)) == ("CA", [("customers", "0", "44.00"), ("cash", "44.00", "0")])
    assert (cheque.journal, cheque.piece_ref) == ("BQ", "CHQ 42")
    assert lines_of(cheque) == [("customers", "0", "100.00"), ("customer_credit", "0", "10.00"),
                                ("cheques", "110.00", "0")]
    assert lines_of(card) == [("customers", "0", "0.01"), ("bank", "0.01", "0")]


def test_a_void_invoice_reverses_its_entry_on_the_void_day():
    issued, void = ledger.invoice_entries(book(voided=date(2026, 12, 2)))
    assert void.day == date(2026, 12, 2) and void.key == "inv_1#void"
    assert [(r, c, d) for r, d, c in lines_of(void)] == lines_of(issued)


def test_entries_survive_their_storage_form():
    for entry in ledger.invoice_entries(book(voided=date(2026, 12, 2))):
        assert ledger.Entry.from_dict(entry.as_dict()) == entry


def test_an_unbalanced_entry_cannot_exist():
    import pytest

    with pytest.raises(ValueError):
        ledger.Entry("k", "VE", NOV, "EUR", "p", NOV, "l", "c", "n",
                     (ledger.EntryLine("customers", D("1.00"), D(0)), ledger.EntryLine("revenue", D(0), D("0.99"))))


def test_custom_accounts_override_the_defaults_only_for_the_roles_given():
    accounts = ledger.accounts_map({"revenue": "706100"})
    assert accounts["revenue"] == "706100" and accounts["customers"] == "411000"


def test_the_fec_has_its_18_columns_french_numbers_and_dates():
    entries = ledger_files.numbered(ledger.invoice_entries(book()), "EUR")
    rows = list(ledger_files.fec_rows(entries, ledger.accounts_map({}), "EUR"))
    assert len(ledger_files.FEC_COLUMNS) == 18
    first = dict(zip(ledger_files.FEC_COLUMNS, rows[0]))
    assert first["EcritureNum"] == "VE202611-00001" and first["EcritureDate"] == "20261101"
    assert (first["CompteNum"], first["CompAuxNum"], first["Debit"], first["Credit"]) == ("411000", "cus_1",
                                                                                          "144,00", "0,00")
    assert dict(zip(ledger_files.FEC_COLUMNS, rows[1]))["CompAuxNum"] == ""
    # Another currency has no place in the euro books.
    assert list(ledger_files.fec_rows(ledger_files.numbered(ledger.invoice_entries(book(currency="USD")), "EUR"),
                                      ledger.accounts_map({}), "EUR")) == []


def test_entry_numbers_run_per_journal_month_and_currency():
    payments = [BookPayment("pay_1", "bank_transfer", date(2026, 12, 3), D("144.00"), D("144.00"), D("0"), "")]
    numbers = [n for n, _ in ledger_files.numbered(ledger.invoice_entries(book(payments=payments)), "EUR")]
    assert numbers == ["VE202611-00001", "BQ202612-00001"]
    usd = [n for n, _ in ledger_files.numbered(ledger.invoice_entries(book(currency="USD")), "EUR")]
    assert usd == ["VEUSD202611-00001"]


amounts = st.integers(min_value=-10_000, max_value=100_000).map(lambda c: D(c).scaleb(-2))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["fee", "usage", "credit", "option"]), amounts), min_size=1, max_size=5),
       st.integers(min_value=0, max_value=2000), st.integers(min_value=0, max_value=20_000), st.booleans(),
       st.sampled_from(["card", "credit_balance", "none"]), st.sampled_from(["cash", "cheque", "bank_transfer", "card"]))
def test_every_entry_balances_and_the_customer_account_nets_out(lines, tax_cents, applied_cents, void, refund, method):
    tax = D(tax_cents).scaleb(-2)
    subtotal = sum((a for _, a in lines), D(0))
    total = subtotal + tax
    applied = min(D(applied_cents).scaleb(-2), max(total, D(0)))
    due = max(total, D(0)) - applied
    payments = [BookPayment("pay_1", method, NOV, due + D("1.00"), due, D("1.00"), "")]
    notes = [BookCreditNote("cn_1", "ODCN2026-000001", NOV, D("1.00"), D("0.20"), D("1.20"), refund, {})]
    entries = ledger.invoice_entries(book(lines=[(k, str(a)) for k, a in lines], tax=str(tax),
                                          credit_applied=str(applied), notes=notes, payments=payments,
                                          voided=NOV if void else None))
    balance: dict[str, Decimal] = {}
    for entry in entries:
        assert sum((line.debit for line in entry.lines), D(0)) == sum((line.credit for line in entry.lines), D(0))
        assert all(line.debit >= 0 and line.credit >= 0 for line in entry.lines)
        for line in entry.lines:
            balance[line.role] = balance.get(line.role, D(0)) + line.debit - line.credit
    assert sum(balance.values(), D(0)) == 0
    # The journal read back from its CSV rows balances too.
    out = io.StringIO()
    csv.writer(out).writerows(ledger_files.journal_rows(ledger_files.numbered(entries, "EUR"),
                                                        ledger.accounts_map({})))
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert sum((D(r[7]) for r in rows), D(0)) == sum((D(r[8]) for r in rows), D(0))
