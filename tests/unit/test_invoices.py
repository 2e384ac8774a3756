"""Invoice totals: tax once on the subtotal, credit balance first, negative totals become credit."""
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.invoices import REVERSE_CHARGE_NOTE, TaxLine, totals

D = Decimal


@dataclass
class Line:
    amount: Decimal


def lines(*amounts):
    return [Line(D(a)) for a in amounts]


def test_api_example_invoice():
    # API.md: one line of 432.60, tax 20.0% = 86.52, total 519.12.
    t = totals(lines("432.60"), "EUR", D("20.0"), False, D(0))
    assert t.subtotal == D("432.60")
    assert t.tax == (TaxLine(D("20.0"), D("86.52")),)
    assert t.total == D("519.12")
    assert (t.credit_applied, t.amount_due, t.credit_balance) == (D(0), D("519.12"), D(0))
    assert t.as_dict() == {
        "subtotal": "432.60",
        "tax": [{"rate": "20.0", "amount": "86.52"}],
        "credit_applied": "0.00",
        "total": "519.12",
        "amount_due": "519.12",
        "reverse_charge": False,
    }


def test_tax_is_rounded_once_on_the_subtotal_not_per_line():
    # Three lines of 0.05 at 10%: per line 0.005 -> 0.01 each = 0.03; once on 0.15 -> 0.015 -> 0.02.
    t = totals(lines("0.05", "0.05", "0.05"), "EUR", D("10"), False, D(0))
    assert t.tax[0].amount == D("0.02")
    assert t.total == D("0.17")


def test_tax_half_up_and_other_currencies():
    assert totals(lines("0.25"), "EUR", D("10"), False, D(0)).tax_amount == D("0.03")  # 0.025
    jpy = totals(lines("1005"), "JPY", D("10"), False, D(0))
    assert (str(jpy.tax_amount), str(jpy.total)) == ("101", "1106")  # 100.5 -> 101
    assert totals(lines("10.000"), "KWD", D("5.5"), False, D(0)).tax_amount == D("0.550")


def test_tax_exempt_gets_zero_and_reverse_charge():
    t = totals(lines("100.00"), "EUR", D("20.0"), True, D(0))
    assert t.tax == (TaxLine(D(0), D("0.00")),)
    assert t.total == D("100.00")
    assert t.reverse_charge is True
    assert t.note == REVERSE_CHARGE_NOTE
    assert totals(lines("100.00"), "EUR", D("20.0"), False, D(0)).note is None


def test_no_rate_for_the_country_no_tax_line():
    t = totals(lines("100.00"), "EUR", None, False, D(0))
    assert t.tax == () and t.tax_amount == 0 and t.total == D("100.00")


def test_credit_balance_is_used_first():
    t = totals(lines("100.00"), "EUR", D("20"), False, D("30.00"))
    assert (t.total, t.credit_applied, t.amount_due, t.credit_balance) == (D("120.00"), D("30.00"), D("90.00"), D(0))


def test_credit_is_never_applied_beyond_the_total():
    t = totals(lines("10.00"), "EUR", D("20"), False, D("50.00"))
    assert (t.credit_applied, t.amount_due, t.credit_balance) == (D("12.00"), D(0), D("38.00"))


def test_a_negative_total_becomes_credit():
    # A proration credit larger than the new charges: -50 + 20% tax = -60 credited.
    t = totals(lines("20.00", "-70.00"), "EUR", D("20"), False, D("5.00"))
    assert (t.subtotal, t.tax_amount, t.total) == (D("-50.00"), D("-10.00"), D("-60.00"))
    assert (t.credit_applied, t.amount_due, t.credit_balance) == (D(0), D(0), D("65.00"))


def test_zero_invoice():
    t = totals([], "EUR", D("20"), False, D("0"))
    assert (str(t.subtotal), str(t.total), str(t.amount_due)) == ("0.00", "0.00", "0.00")


def test_bad_inputs():
    with pytest.raises(ValueError):
        totals(lines("1"), "EUR", D("20"), False, D("-1"))
    with pytest.raises(ValueError):
        totals(lines("1"), "EUR", D("-20"), False, D("0"))


AMOUNTS = st.lists(st.decimals(min_value=D(-10000), max_value=D(10000), places=2), max_size=12)


@given(AMOUNTS, st.none() | st.decimals(min_value=D(0), max_value=D(30), places=1), st.booleans(), st.decimals(min_value=D(0), max_value=D(5000), places=2))
def test_totals_balance(amounts, rate, exempt, balance):
    t = totals([Line(a) for a in amounts], "EUR", rate, exempt, balance)
    for value in (t.subtotal, t.tax_amount, t.total, t.credit_applied, t.amount_due, t.credit_balance):
        assert type(value) is Decimal
        assert value == value.quantize(D("0.01"))
    assert t.total == t.subtotal + t.tax_amount
    assert t.amount_due >= 0 and t.credit_applied >= 0 and t.credit_balance >= 0
    assert t.credit_applied <= balance
    # money is conserved: what is due plus the balance change equals the total
    assert t.amount_due - (t.credit_balance - balance) == t.total
