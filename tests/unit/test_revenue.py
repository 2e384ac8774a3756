"""Revenue recognition (domain/revenue.py), by hand with plain numbers, then
its properties with hypothesis: a line's months add up to it; recognised +
deferred == invoiced - credited to date; credit notes and voids reverse."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain import revenue
from chalicelib.domain.books import BookCreditNote, BookInvoice, BookLine
from chalicelib.domain.revenue import Earning, allocate, by_month, contribution, earned_before

D = Decimal


def invoice(lines, *, finalized=date(2026, 1, 1), credit_notes=(), voided=None, currency="EUR") -> BookInvoice:
    book_lines = tuple(BookLine(f"il_{i}", kind, "", D(amount), start, end)
                       for i, (kind, amount, start, end) in enumerate(lines))
    subtotal = sum((line.amount for line in book_lines), D(0))
    return BookInvoice("inv_1", "OD2026-000001", currency, "cus_1", "Jean Dupont", finalized, voided, book_lines,
                       subtotal, D(0), subtotal, D(0), tuple(credit_notes), ())


def note(day, subtotal, lines=None, refund="none", number="ODCN2026-000001"):
    return BookCreditNote(f"cn_{number}", number, day, D(subtotal), D(0), D(subtotal), refund,
                          {k: D(v) for k, v in (lines or {}).items()})


def months_total(figures: dict, name: str) -> Decimal:
    return sum((f.get(name, D(0)) for f in figures.values()), D(0))


# -- by hand ---------------------------------------------------------------------------------


def test_a_quarter_prepaid_is_spread_by_day_with_cumulative_rounding():
    # 300.00 over 1 Jan - 1 Apr 2026: 90 days, 31 + 28 + 31.
    # Earned by 1 Feb: 300 x 31/90 = 103.333 -> 103.33; by 1 Mar: 300 x 59/90 = 196.667 -> 196.67.
    item = Earning(D("300.00"), date(2026, 1, 1), date(2026, 1, 1), date(2026, 4, 1))
    assert by_month(item, "EUR") == {"2026-01": D("103.33"), "2026-02": D("93.34"), "2026-03": D("103.33")}
    assert earned_before(item, date(2026, 1, 16), "EUR") == D("50.00")  # 15 days of 90


def test_yen_has_no_decimals():
    item = Earning(D("1000"), date(2026, 1, 1), date(2026, 1, 1), date(2026, 4, 1))
    # 1000 x 31/90 = 344.4 -> 344; by 1 March 1000 x 59/90 = 655.6 -> 656.
    assert by_month(item, "JPY") == {"2026-01": D("344"), "2026-02": D("312"), "2026-03": D("344")}


def test_usage_billed_in_arrears_is_recognised_when_invoiced_never_before():
    # October's usage, invoiced on 1 November: all of it in November.
    item = Earning(D("24.00"), date(2026, 11, 1), date(2026, 10, 1), date(2026, 11, 1))
    assert by_month(item, "EUR") == {"2026-11": D("24.00")}


def test_an_invoice_finalized_mid_period_catches_up_on_its_day():
    # A 30-day November fee of 90.00 invoiced on 16 November: the 15 days past at once, then by day.
    item = Earning(D("90.00"), date(2026, 11, 16), date(2026, 11, 1), date(2026, 12, 31))
    assert by_month(item, "EUR") == {"2026-11": D("45.00"), "2026-12": D("45.00")}
    assert earned_before(item, date(2026, 11, 16), "EUR") == 0
    assert earned_before(item, date(2026, 11, 17), "EUR") == D("24.00")  # 16 days of 60


def test_a_line_without_a_period_is_earned_on_its_date():
    assert by_month(Earning(D("12.00"), date(2026, 5, 20), None, None), "EUR") == {"2026-05": D("12.00")}


def test_a_credit_note_on_a_line_reverses_its_share_from_the_credit_note_day():
    # 90.00 over 1 Jan - 1 Apr (90 days); 45.00 of it credited on 15 February.
    # January 31.00; February 28.00 of the line, and the credit takes back 45 x 59/90 = 29.50 by 1 March
    # (what January and February had earned of the half credited): -1.50; March 31.00 - 15.50.
    books = invoice([("fee", "90.00", date(2026, 1, 1), date(2026, 4, 1))],
                    credit_notes=[note(date(2026, 2, 15), "45.00", {"il_0": "45.00"})])
    figures = contribution(books)
    assert figures == {
        "2026-01": {"recognized": D("31.00"), "invoiced": D("90.00")},
        "2026-02": {"recognized": D("-1.50"), "credited": D("45.00")},
        "2026-03": {"recognized": D("15.50")},
    }


def test_a_credit_note_without_lines_credits_the_positive_lines_in_proportion():
    books = invoice([("fee", "60.00", date(2026, 1, 1), date(2026, 2, 1)),
                     ("option", "30.00", date(2026, 1, 1), date(2026, 2, 1)),
                     ("credit", "-10.00", date(2026, 1, 1), date(2026, 2, 1))],
                    credit_notes=[note(date(2026, 3, 1), "10.00")])
    items = [e for what, e in revenue.earnings(books) if what == "credited"]
    assert sorted(e.amount for e in items) == [D("-6.67"), D("-3.33")]
    assert months_total(contribution(books), "recognized") == D("70.00")


def test_allocate_keeps_every_cent():
    assert allocate(D("10.00"), [D(1), D(1), D(1)], "EUR") == [D("3.34"), D("3.33"), D("3.33")]
    assert allocate(D("-10.00"), [D(1), D(1), D(1)], "EUR") == [D("-3.34"), D("-3.33"), D("-3.33")]
    assert allocate(D("1"), [D("2"), D("1")], "JPY") == [D("1"), D("0")]


def test_a_voided_invoice_gives_back_all_it_recognised_on_its_void_day():
    books = invoice([("fee", "300.00", date(2026, 1, 1), date(2026, 4, 1))], voided=date(2026, 2, 10))
    figures = contribution(books)
    assert figures["2026-01"] == {"recognized": D("103.33"), "invoiced": D("300.00")}
    assert figures["2026-02"] == {"recognized": D("-103.33"), "credited": D("300.00")}
    assert "2026-03" not in figures


def test_the_report_of_a_month_from_the_monthly_figures():
    books = invoice([("fee", "300.00", date(2026, 1, 1), date(2026, 4, 1))])
    history = [(month, "EUR", figures) for month, figures in contribution(books).items()]
    january = revenue.report("2026-01", history)["currencies"]["EUR"]
    assert january == {"recognized": "103.33", "invoiced": "300.00", "credited": "0.00",
                       "deferred_at_start": "0.00", "deferred": "196.67"}
    february = revenue.report("2026-02", history)["currencies"]["EUR"]
    assert february == {"recognized": "93.34", "invoiced": "0.00", "credited": "0.00",
                        "deferred_at_start": "196.67", "deferred": "103.33"}
    assert revenue.report("2025-12", history)["currencies"] == {}
    assert revenue.report("2026-04", history)["currencies"] == {}  # nothing left, nothing moved


# -- properties ------------------------------------------------------------------------------

DAY0 = date(2025, 1, 1)
cents = st.integers(min_value=-10**8, max_value=10**8).map(lambda c: D(c).scaleb(-2))
days = st.integers(min_value=0, max_value=900)


@st.composite
def earnings(draw):
    start = DAY0 + timedelta(days=draw(days))
    length = draw(st.integers(min_value=0, max_value=800))
    dated = start + timedelta(days=draw(st.integers(min_value=-60, max_value=length + 60)))
    return Earning(draw(cents), dated, start, start + timedelta(days=length))


@given(earnings(), st.sampled_from(["EUR", "JPY", "KWD"]))
def test_the_months_of_a_line_add_up_to_it_exactly(item, currency):
    from chalicelib.domain.money import round_money

    item = Earning(round_money(item.amount, currency), item.dated, item.start, item.end)
    months = by_month(item, currency)
    assert sum(months.values(), D(0)) == item.amount
    assert all(month >= revenue.month_key(item.dated) for month in months)
    # Never a month more than its share of days, give or take a rounding step.
    if item.days:
        unit = D(1).scaleb(-{"EUR": 2, "JPY": 0, "KWD": 3}[currency])
        for month, amount in months.items():
            first = revenue.first_day(month)
            following = revenue.first_day(revenue.next_month(month))
            span = (min(following, item.end) - max(first, item.start)).days
            if first > item.dated:
                assert abs(amount) <= abs(item.amount) * max(span, 0) / item.days + unit


@st.composite
def invoices(draw):
    finalized = DAY0 + timedelta(days=draw(st.integers(min_value=0, max_value=400)))
    lines = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        start = finalized + timedelta(days=draw(st.integers(min_value=-40, max_value=40)))
        length = draw(st.integers(min_value=0, max_value=400))
        amount = D(draw(st.integers(min_value=-5_000, max_value=50_000))).scaleb(-2)
        kind = "credit" if amount < 0 else draw(st.sampled_from(["fee", "usage", "option"]))
        lines.append((kind, amount, start, start + timedelta(days=length)))
    books = invoice(lines, finalized=finalized)
    notes, left = [], {line.line_id: line.amount for line in books.lines}
    day = finalized
    for n in range(draw(st.integers(min_value=0, max_value=3))):
        day = day + timedelta(days=draw(st.integers(min_value=0, max_value=200)))
        credited = {}
        for line_id, amount in left.items():
            if amount > 0 and draw(st.booleans()):
                part = D(draw(st.integers(min_value=1, max_value=int(amount * 100)))).scaleb(-2)
                credited[line_id] = part
                left[line_id] -= part
        unlined = D(draw(st.integers(min_value=0, max_value=500))).scaleb(-2)
        subtotal = sum(credited.values(), D(0)) + unlined
        if subtotal:
            notes.append(note(day, subtotal, credited, number=f"ODCN2026-{n:06d}"))
    voided = day + timedelta(days=draw(st.integers(min_value=0, max_value=90))) if draw(st.booleans()) else None
    return BookInvoice(books.invoice_id, books.number, "EUR", "cus_1", "", finalized, voided, books.lines,
                       books.subtotal, D(0), books.subtotal, D(0), tuple(notes), ())


@settings(max_examples=150, deadline=None)
@given(st.lists(invoices(), min_size=1, max_size=3))
def test_recognised_and_deferred_always_add_up_to_what_was_invoiced_less_credited(books):
    history: dict[str, dict[str, Decimal]] = {}
    for one in books:
        for month, figures in contribution(one).items():
            for name, amount in figures.items():
                history.setdefault(month, {}).setdefault(name, D(0))
                history[month][name] += amount
    rows = [(month, "EUR", figures) for month, figures in history.items()]
    months = sorted(history)
    if not months:  # every line and credit of 0
        return
    recognized_to_date = invoiced_to_date = credited_to_date = D(0)
    month = months[0]
    while month <= months[-1]:
        figures = history.get(month, {})
        recognized_to_date += figures.get("recognized", D(0))
        invoiced_to_date += figures.get("invoiced", D(0))
        credited_to_date += figures.get("credited", D(0))
        shown = revenue.report(month, rows)["currencies"].get("EUR")
        deferred = D(shown["deferred"]) if shown else D(0)
        assert recognized_to_date + deferred == invoiced_to_date - credited_to_date
        month = revenue.next_month(month)
    # Every period over: all of it recognised, net of credit notes; a void leaves nothing.
    assert recognized_to_date == invoiced_to_date - credited_to_date
    for one in books:
        credited = sum((n.subtotal for n in one.credit_notes), D(0))
        net = D(0) if one.voided else one.subtotal - credited
        assert months_total(contribution(one), "recognized") == net
        assert months_total(contribution(one), "invoiced") == one.subtotal


@pytest.mark.parametrize("month, following", [("2026-12", "2027-01"), ("2026-01", "2026-02")])
def test_next_month(month, following):
    assert revenue.next_month(month) == following
