"""Commission and royalty rules (domain/commissions.py), with plain numbers,
and hypothesis for the reversals: a full credit nets every accrual to zero,
a partial one reverses in proportion, cent-exact however it is split."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.commissions import (
    NEW_SUBSCRIPTION,
    CreditNote,
    PaidLine,
    Rule,
    accrue,
    month_of,
    next_month,
    reverse,
    rule_from_dict,
    statement_number,
    subscription_age_months,
)

RESELLER = Rule(percent=D("20"), first_months=3, then_percent=D("10"))
LICENSOR = Rule(components=frozenset({"montage"}), per_unit=D("0.05"))


def fee(line_id="l0", amount="49.00", age=0, offer="clico"):
    return PaidLine(line_id, D(amount), "fee", offer, "base", D("1"), age, "Base")


def montages(line_id="l1", quantity="412", amount="494.40", age=0):
    return PaidLine(line_id, D(amount), "usage", "clico", "montage", D(quantity), age, "Montages")


def test_a_percentage_of_each_line_net_of_tax_rounded_once():
    [accrual] = accrue([Rule(percent=D("20"))], [fee(amount="49.99")], "EUR")
    assert accrual.amount == D("10.00")  # 9.998 half up
    assert [p.as_dict() for p in accrual.parts] == [{"rule": 0, "basis": "percent", "base": "49.99", "rate": "20"}]


def test_a_higher_rate_for_the_first_months_then_the_recurring_one():
    amounts = [accrue([RESELLER], [fee(age=age)], "EUR")[0].amount for age in range(5)]
    assert amounts == [D("9.80"), D("9.80"), D("9.80"), D("4.90"), D("4.90")]


def test_first_months_without_then_percent_earn_nothing_afterwards():
    rule = Rule(percent=D("15"), first_months=2)
    assert accrue([rule], [fee(age=1)], "EUR")[0].amount == D("7.35")
    assert accrue([rule], [fee(age=2)], "EUR") == []


def test_a_royalty_per_unit_of_a_meter():
    lines = [fee(), montages(quantity="412")]
    [royalty] = accrue([LICENSOR], lines, "EUR")
    assert (royalty.key, royalty.amount) == ("l1", D("20.60"))


def test_units_given_per_component_are_counted_once():
    lines = [montages("l1", "100", "120.00"), montages("l2", "50", "50.00")]
    accruals = accrue([LICENSOR], lines, "EUR", usage_units={"montage": D("200")})
    assert [(a.key, a.amount) for a in accruals] == [("l1", D("10.00"))]


def test_a_flat_amount_per_new_subscription_once():
    rule = Rule(flat_per_new_subscription=D("25.00"), offer_codes=frozenset({"clico"}))
    assert accrue([rule], [fee()], "EUR") == []
    [flat] = accrue([rule], [fee()], "EUR", new_subscription=True)
    assert (flat.key, flat.amount) == (NEW_SUBSCRIPTION, D("25.00"))
    assert accrue([rule], [fee(offer="other")], "EUR", new_subscription=True) == []


def test_rules_that_match_one_line_are_summed_then_rounded_once():
    rules = [Rule(percent=D("10.005")), Rule(percent=D("0.005"))]
    [accrual] = accrue(rules, [fee(amount="1.00")], "EUR")
    assert accrual.amount == D("0.10")  # 0.10005 + 0.00005 = 0.1001
    rules = [Rule(percent=D("0.5")), Rule(percent=D("0.5"))]
    assert accrue(rules, [fee(amount="0.50")], "EUR")[0].amount == D("0.01")  # 0.0025 + 0.0025, not 0.00 + 0.00


def test_applies_to_filters_offers_and_components():
    rule = Rule(percent=D("10"), offer_codes=frozenset({"clico"}), components=frozenset({"base"}))
    lines = [fee(), fee("l2", offer="other"), montages()]
    assert [a.key for a in accrue([rule], lines, "EUR")] == ["l0"]


def test_a_negative_line_lowers_the_accrual():
    lines = [fee(), PaidLine("l9", D("-24.50"), "proration", "clico", "base")]
    assert [a.amount for a in accrue([Rule(percent=D("20"))], lines, "EUR")] == [D("9.80"), D("-4.90")]


def test_currency_minor_units():
    assert accrue([Rule(percent=D("10"))], [fee(amount="1235")], "JPY")[0].amount == D("124")


def test_a_full_credit_note_reverses_everything():
    lines = [fee(), montages()]
    accruals = accrue([RESELLER, LICENSOR], lines, "EUR")
    note = CreditNote("cn_1", unattributed=D("543.40"))
    reversals = reverse(accruals, [note], {l.line_id: l.amount for l in lines}, D("543.40"), "EUR")
    assert {r.key: r.amount for r in reversals} == {"l0": D("-9.80"), "l1": D("-119.48")}


def test_a_credit_of_one_line_reverses_that_line_only():
    lines = [fee(), montages()]
    accruals = accrue([Rule(percent=D("20"))], lines, "EUR")
    note = CreditNote("cn_1", lines={"l1": D("247.20")})
    [reversal] = reverse(accruals, [note], {l.line_id: l.amount for l in lines}, D("543.40"), "EUR")
    assert (reversal.key, reversal.amount, reversal.fraction) == ("l1", D("-49.44"), D("0.5"))


def test_partial_credit_notes_add_up_to_the_cent():
    accruals = accrue([Rule(percent=D("20"))], [fee(amount="0.05")], "EUR")  # 0.01
    notes = [CreditNote(f"cn_{i}", unattributed=D("0.01")) for i in range(5)]
    reversals = reverse(accruals, notes, {"l0": D("0.05")}, D("0.05"), "EUR")
    assert sum(r.amount for r in reversals) == D("-0.01")


def test_helpers():
    paris = "Europe/Paris"
    start = datetime(2026, 10, 31, 23, tzinfo=timezone.utc)  # 1 Nov, Paris midnight
    assert subscription_age_months(start, datetime(2026, 11, 30, 23, tzinfo=timezone.utc), paris) == 1
    assert subscription_age_months(start, datetime(2026, 11, 30, 22, tzinfo=timezone.utc), paris) == 0
    assert subscription_age_months(datetime(2026, 1, 31, tzinfo=timezone.utc),
                                   datetime(2026, 2, 28, tzinfo=timezone.utc)) == 1
    assert month_of(start, paris) == "2026-11" and month_of(start) == "2026-10"
    assert next_month("2026-12") == "2027-01"
    assert statement_number("OD", 2026, 7) == "ODST2026-000007"
    rule = rule_from_dict({"applies_to": {"components": ["montage"]}, "per_unit": "0.05"})
    assert rule == Rule(components=frozenset({"montage"}), per_unit=D("0.05"))


# -- properties ------------------------------------------------------------------------

amounts = st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2)
percents = st.decimals(min_value=D("0.01"), max_value=D("100"), places=3)


@settings(max_examples=200, deadline=None)
@given(st.lists(amounts, min_size=1, max_size=6), percents, st.integers(1, 6))
def test_a_full_credit_nets_every_accrual_to_zero_however_split(line_amounts, percent, parts):
    lines = [PaidLine(f"l{i}", a) for i, a in enumerate(line_amounts)]
    accruals = accrue([Rule(percent=percent)], lines, "EUR", new_subscription=False)
    subtotal = sum(line_amounts)
    share = (subtotal / parts).quantize(D("0.01"))
    notes = [CreditNote(f"cn_{i}", unattributed=share) for i in range(parts - 1)]
    notes.append(CreditNote(f"cn_{parts}", unattributed=subtotal - share * (parts - 1)))
    reversals = reverse(accruals, notes, {l.line_id: l.amount for l in lines}, subtotal, "EUR")
    for accrual in accruals:
        assert accrual.amount + sum(r.amount for r in reversals if r.key == accrual.key) == 0


@settings(max_examples=200, deadline=None)
@given(amounts, percents, st.decimals(min_value=D("0.01"), max_value=D("1"), places=4))
def test_a_partial_credit_reverses_in_proportion(amount, percent, fraction):
    [accrual] = accrue([Rule(percent=percent)], [PaidLine("l0", amount)], "EUR") or [None]
    if accrual is None:
        return
    credited = min((amount * fraction).quantize(D("0.01")), amount)
    reversals = reverse([accrual], [CreditNote("cn_1", lines={"l0": credited})], {"l0": amount}, amount, "EUR")
    taken = sum(r.amount for r in reversals)
    assert taken == -(accrual.amount * credited / amount).quantize(D("0.01"), rounding="ROUND_HALF_UP")
    assert abs(taken) <= abs(accrual.amount)


def test_a_statements_events_are_its_moves_to_issued_and_paid():
    from chalicelib.domain.commissions import statement_event_types

    assert statement_event_types(None, {"status": "draft"}) == []
    assert statement_event_types({"status": "draft"}, {"status": "draft", "revision": "2"}) == []
    assert statement_event_types({"status": "draft"}, {"status": "issued"}) == ["statement.issued"]
    assert statement_event_types(None, {"status": "issued"}) == ["statement.issued"]
    assert statement_event_types({"status": "issued"}, {"status": "paid"}) == ["statement.paid"]
    assert statement_event_types({"status": "paid"}, {"status": "paid"}) == []
    assert statement_event_types({"status": "paid"}, None) == []
