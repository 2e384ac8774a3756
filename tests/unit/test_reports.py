"""The reports' arithmetic, with plain numbers."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain import reports
from chalicelib.domain.errors import InvalidRequest

D = Decimal


def invoice(status="open", *, total="120.00", due="120.00", paid="0.00", finalized="2026-10-31T23:00:00Z",
            paid_at=None, lines=({"kind": "usage", "amount": "30.00"}, {"kind": "fee", "amount": "70.00"})):
    return reports.InvoiceFacts(status=status, currency="EUR", timezone="Europe/Paris", finalized_at=finalized,
                                paid_at=paid_at, total=total, amount_paid=paid, amount_due=due, lines=tuple(lines))


def test_a_fact_belongs_to_the_merchants_month():
    # 31 Oct 23:00 UTC is 1 Nov in Paris.
    assert reports.month_of("2026-10-31T23:00:00Z", "Europe/Paris") == "2026-11"
    assert reports.month_of("2026-10-31T23:00:00Z", "UTC") == "2026-10"
    assert reports.month_bounds("2026-11", "Europe/Paris") == (
        datetime(2026, 10, 31, 23, tzinfo=timezone.utc), datetime(2026, 11, 30, 23, tzinfo=timezone.utc))
    assert reports.add_months("2026-01", -2) == "2025-11" and reports.add_months("2026-12", 1) == "2027-01"


@pytest.mark.parametrize("fee, unit, count, monthly", [
    ("49.00", "month", 1, "49.00"), ("147.00", "month", 3, "49.00"), ("588.00", "year", 1, "49.00"),
    ("12.00", "week", 1, "52.00"), ("1.00", "day", 1, "30.416666666667"),
])
def test_recurring_fees_normalized_to_a_month(fee, unit, count, monthly):
    assert reports.monthly_amount(D(fee), unit, count) == D(monthly).quantize(reports.QUANTUM)


def test_paying_an_invoice_moves_it_from_outstanding_to_collected():
    opened = reports.invoice_contribution(invoice())
    paid = reports.invoice_contribution(invoice("paid", due="0.00", paid="120.00", paid_at="2026-11-05T10:00:00Z"))
    change = reports.delta(opened, paid, "2026-11")
    assert change == {("month#2026-11#EUR", "collected"): D("120.00"), ("stock#EUR", "outstanding"): D("-120.00"),
                      ("month#2026-11#EUR", "outstanding_delta"): D("-120.00")}


def test_voiding_takes_the_invoice_out_of_its_month():
    issued = reports.delta({}, reports.invoice_contribution(invoice()), "2026-11")
    voided = reports.delta(reports.invoice_contribution(invoice()),
                           reports.invoice_contribution(invoice("void")), "2026-12")
    total = {key: issued.get(key, D(0)) + voided.get(key, D(0)) for key in set(issued) | set(voided)}
    assert {key: value for key, value in total.items() if value} == {
        ("month#2026-11#EUR", "outstanding_delta"): D("120.00"),
        ("month#2026-12#EUR", "outstanding_delta"): D("-120.00"),
    }
    assert reports.invoice_contribution(invoice("draft")) == {}


def subscription(status="active", paused=False, canceled_at=None, recurring="49.00"):
    return reports.SubscriptionFacts(status=status, paused=paused, currency="EUR", timezone="UTC",
                                     created_at="2026-10-01T00:00:00Z", canceled_at=canceled_at,
                                     recurring_per_month=D(recurring))


def test_a_subscription_is_live_while_active_or_past_due_and_not_paused():
    assert reports.is_live(subscription()) and reports.is_live(subscription("past_due"))
    assert not reports.is_live(subscription("trialing")) and not reports.is_live(subscription(paused=True))
    churn = reports.delta(reports.subscription_contribution(subscription()),
                          reports.subscription_contribution(subscription("canceled",
                                                                         canceled_at="2026-11-20T00:00:00Z")),
                          "2026-11")
    assert churn[("month#2026-11#EUR", "churned")] == 1
    assert churn[("stock#EUR", "active")] == -1 and churn[("month#2026-11#EUR", "active_delta")] == -1
    assert churn[("stock#EUR", "recurring")] == D("-49.00")


def test_a_past_month_is_the_stock_now_minus_the_changes_since():
    aggregates = {
        "stock#EUR": {"recurring": D("300"), "active": D("5"), "outstanding": D("40")},
        "month#2026-10#EUR": {"usage_charges": D("30"), "active_delta": D("2"), "recurring_delta": D("100"),
                              "new": D("2"), "invoiced": D("500")},
        "month#2026-11#EUR": {"usage_charges": D("60"), "active_delta": D("-1"), "churned": D("1"),
                              "recurring_delta": D("-50"), "outstanding_delta": D("10")},
        "month#2026-12#EUR": {"active_delta": D("2"), "recurring_delta": D("100"), "outstanding_delta": D("25")},
    }
    november = reports.summarize("2026-11", aggregates)["currencies"]["EUR"]
    assert november["mrr_recurring"] == "200.00" and november["mrr_usage"] == "30.00"
    assert (november["mrr"], november["arr"]) == ("230.00", "2760.00")
    assert (november["active_subscriptions"], november["active_subscriptions_at_start"]) == (3, 4)
    assert november["churn_rate"] == "0.2500" and november["outstanding"] == "15.00"
    october = reports.summarize("2026-10", aggregates)["currencies"]["EUR"]
    assert october["active_subscriptions"] == 4 and october["active_subscriptions_at_start"] == 2
    assert october["mrr_usage"] == "10.00" and october["invoiced"] == "500.00"


@given(st.lists(st.decimals(min_value=-1000, max_value=1000, places=2), min_size=1, max_size=20),
       st.sampled_from(["20.0", "19.0", "5.5", "0"]))
def test_the_lines_vat_adds_up_to_the_invoice_vat(amounts, rate):
    from chalicelib.domain.money import round_money

    invoice_tax = round_money(sum(amounts, D(0)) * D(rate) / 100, "EUR")
    taxes = reports.line_taxes(amounts, D(rate), invoice_tax, "EUR")
    assert sum(taxes, D(0)) == invoice_tax
    assert all(abs(t - a * D(rate) / 100) <= D("0.01") * len(amounts) for t, a in zip(taxes, amounts))


def test_lines_of_opposite_signs_carry_their_vat_when_the_invoice_has_none():
    # 0.09 x 5.5% rounds to 0.00 for the invoice; each line keeps its own.
    assert reports.line_taxes([D("-0.28"), D("0.37")], D("5.5"), D("0.00"), "EUR") == [D("-0.02"), D("0.02")]
    assert reports.line_taxes([D("-10.00"), D("10.00")], D("20.0"), D("0.00"), "EUR") == [D("-2.00"), D("2.00")]
    assert reports.line_taxes([D("10.00")], D("0"), D("0.00"), "EUR") == [D("0.00")]


@pytest.mark.parametrize("text", [None, "", "2026-13", "2026-1", "26-10", "2026-10-01"])
def test_a_bad_month_names_its_field(text):
    with pytest.raises(InvalidRequest) as refused:
        reports.parse_month(text)
    assert refused.value.param == "month"
