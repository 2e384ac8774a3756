"""What a credit note credits (domain/credit_notes.py), with plain numbers."""
from __future__ import annotations

from decimal import Decimal as D

import pytest

from chalicelib.domain.credit_notes import Credited, credit_amounts
from chalicelib.domain.errors import InvalidRequest

LINES = [{"id": "il_a_0", "description": "Base", "amount": "49.00"},
         {"id": "il_a_1", "description": "Express", "amount": "30.00"}]
VAT = [{"rate": "20.0", "amount": "15.80"}]


def amounts(lines=None, amount=None, credited=Credited(), tax=VAT, invoice_lines=LINES, subtotal="79.00",
            total="94.80"):
    return credit_amounts(currency="EUR", invoice_lines=invoice_lines, invoice_tax=tax,
                          invoice_subtotal=D(subtotal), invoice_total=D(total), credited=credited, lines=lines,
                          amount=amount, description="Credit")


def test_lines_are_pre_tax_and_the_tax_is_added_at_the_invoices_rate():
    note = amounts(lines=[("il_a_0", D("10.00")), ("il_a_1", D("5.05"))])
    assert (note.subtotal, note.tax, note.total) == (D("15.05"), (("20.0", D("3.01")),), D("18.06"))
    assert [line.description for line in note.lines] == ["Base", "Express"]


def test_an_amount_is_the_total_tax_included():
    note = amounts(amount=D("12.00"))
    assert (note.subtotal, note.tax, note.total) == (D("10.00"), (("20.0", D("2.00")),), D("12.00"))
    assert note.lines[0].invoice_line_id is None


def test_the_last_credit_takes_the_tax_left_so_rounding_never_credits_more_than_the_total():
    # 0.01 x3 at 50%: the invoice's tax is 0.015 -> 0.02, each line's alone would round to 0.01.
    lines = [{"id": f"il_b_{n}", "description": "x", "amount": "0.01"} for n in range(3)]
    tax = [{"rate": "50", "amount": "0.02"}]
    credited = Credited()
    totals = []
    for n in range(3):
        note = amounts(lines=[(f"il_b_{n}", D("0.01"))], credited=credited, tax=tax, invoice_lines=lines,
                       subtotal="0.03", total="0.05")
        totals.append(note.total)
        credited = Credited(subtotal=credited.subtotal + note.subtotal,
                            tax={"50": credited.tax.get("50", D(0)) + note.tax[0][1]},
                            total=credited.total + note.total,
                            lines={**credited.lines, f"il_b_{n}": D("0.01")})
    assert totals == [D("0.02"), D("0.02"), D("0.01")] and sum(totals) == D("0.05")


def test_reverse_charge_credits_no_tax():
    note = amounts(amount=D("49.00"), tax=[{"rate": "0", "amount": "0.00"}], total="79.00")
    assert (note.subtotal, note.tax, note.total) == (D("49.00"), (("0", D("0.00")),), D("49.00"))


@pytest.mark.parametrize("kwargs, param", [
    ({"amount": D("94.81")}, "amount"),
    ({"amount": D("1.001")}, "amount"),
    ({"lines": [("il_a_0", D("49.01"))]}, "lines[0].amount"),
    ({"lines": [("il_a_0", D("30")), ("il_a_0", D("19.01"))]}, "lines[1].amount"),
    ({"lines": [("il_zz_9", D("1"))]}, "lines[0].invoice_line_id"),
    ({"amount": D("10"), "credited": Credited(subtotal=D("75"), tax={"20.0": D("15")}, total=D("90"))}, "amount"),
])
def test_more_than_is_left_is_refused_naming_the_field(kwargs, param):
    with pytest.raises(InvalidRequest) as refused:
        amounts(**kwargs)
    assert refused.value.param == param
