"""What an invoice holds (domain/invoicing), with plain numbers worked by hand.

The terms (tests/unit/invoicing_catalog.py): basic is 49.00 a month, 1.20 a
montage, calls graduated beyond 100 included (0.50 up to 1000, 0.40 after)
and an express option at 30.00; from 1 January 2027 its version 2 costs
55.00. Plus is 79.00 and 1.05 a montage; per-act 10.00 and 2.00 a montage.
November 2026 has 30 days, December 31.
"""
from chalicelib.domain.invoicing import (
    BilledPeriod, Opening, after_cancel, at_boundary, cancel_now, change_now, first_invoice, key, late_usage,
    resume_now, same_usage,
)
from chalicelib.domain.lifecycle import Phase, Plan
from chalicelib.domain.proration import BilledUsage
from chalicelib.domain.rating import MeterUsage
from tests.unit.invoicing_catalog import (
    BASIC_PLAN, D, DAY, DAY_10, DEC, JAN, NOV, PLUS_PLAN, TERMS, TRIAL, account, amounts, total, usage_of, used,
)

NO_CALLS = ("usage", "calls", D("0.00"))  # a metered component always shows its line, zero included
ZERO_MONTAGES = ("usage", "montage", D("0.00"))


# --- at_boundary ------------------------------------------------------------

def test_a_boundary_bills_the_closed_period_usage_in_arrears_and_the_next_fees_in_advance():
    usage = usage_of((NOV, used(montages=10, calls=350)))
    draft = at_boundary(account(fees_billed=True), {}, usage, TERMS)
    assert amounts(draft.lines) == [
        ("usage", "montage", D("12.00")),   # 10 x 1.20
        ("usage", "calls", D("125.00")),    # (350 - 100 included) x 0.50
        ("fee", "base", D("49.00")),        # December, in advance
        ("option", "express", D("30.00")),
    ]
    assert all((line.period_start, line.period_end) == (NOV.start, NOV.end) for line in draft.lines[:2])
    assert all((line.period_start, line.period_end) == (DEC.start, DEC.end) for line in draft.lines[2:])
    assert (draft.start, draft.end) == (NOV.start, DEC.end)
    assert draft.billed == {key(NOV.start): BilledPeriod(NOV, BASIC_PLAN, usage[key(NOV.start)])}
    assert draft.opening == Opening(DEC, BASIC_PLAN, 1, 1)
    assert draft.billed_inside is None


def test_the_end_of_a_trial_charges_no_usage_and_records_the_trial_as_free():
    usage = usage_of((TRIAL, used(montages=40)))
    draft = at_boundary(account(TRIAL, -1), {}, usage, TERMS)
    assert amounts(draft.lines) == [("fee", "base", D("49.00")), ("option", "express", D("30.00"))]
    assert draft.billed == {key(TRIAL.start): BilledPeriod(TRIAL, BASIC_PLAN, used(montages=40), free=True)}
    assert draft.opening == Opening(NOV, BASIC_PLAN, 1, 0)


def test_a_paused_boundary_bills_no_fees_and_defers_the_usage_but_still_opens_the_next_period():
    draft = at_boundary(account(paused=True, fees_billed=True), {}, usage_of((NOV, used(montages=10))), TERMS)
    assert draft.lines == ()
    assert draft.billed == {}  # nothing of November is billed: it waits for the resume
    assert draft.opening == Opening(DEC, BASIC_PLAN, 1, 1)


def test_the_first_boundary_after_a_resume_bills_the_periods_closed_while_paused():
    # Paused through the November boundary, resumed in December.
    usage = usage_of((NOV, used(montages=10, calls=150)), (DEC, used(montages=5)))
    resumed = account(DEC, 1, fees_billed=True, deferred=(key(NOV.start),))
    draft = at_boundary(resumed, {}, usage, TERMS)
    assert amounts(draft.lines) == [
        ("usage", "montage", D("12.00")),   # November: 10 x 1.20
        ("usage", "calls", D("25.00")),     # November: (150 - 100) x 0.50
        ("usage", "montage", D("6.00")),    # December: 5 x 1.20
        NO_CALLS,
        ("fee", "base", D("55.00")),        # January runs on version 2
        ("option", "express", D("30.00")),
    ]
    assert [line.period_start for line in draft.lines[:4]] == [NOV.start, NOV.start, DEC.start, DEC.start]
    assert set(draft.billed) == {key(NOV.start), key(DEC.start)}
    assert (draft.start, draft.end) == (NOV.start, JAN.end)
    assert draft.opening == Opening(JAN, BASIC_PLAN, 2, 2)


def test_a_cancellation_at_period_end_bills_the_last_usage_and_opens_nothing():
    draft = at_boundary(account(cancel_at_period_end=True, fees_billed=True), {},
                        usage_of((NOV, used(montages=10))), TERMS)
    assert amounts(draft.lines) == [("usage", "montage", D("12.00")), NO_CALLS]
    assert draft.opening is None
    assert (draft.start, draft.end) == (NOV.start, NOV.end)
    assert set(draft.billed) == {key(NOV.start)}


def test_a_change_scheduled_for_the_period_end_bills_the_old_usage_and_the_new_fees():
    draft = at_boundary(account(pending_change=PLUS_PLAN, fees_billed=True), {},
                        usage_of((NOV, used(montages=10))), TERMS)
    assert amounts(draft.lines) == [
        ("usage", "montage", D("12.00")),   # November under basic: 10 x 1.20
        NO_CALLS,
        ("fee", "base", D("79.00")),        # December under plus, without the option
    ]
    assert draft.billed[key(NOV.start)].plan == BASIC_PLAN
    assert draft.opening == Opening(DEC, PLUS_PLAN, 1, 1)


def test_a_phase_reached_by_the_next_period_decides_its_offer_and_keeps_the_options():
    phases = (Phase(after_periods=1, offer_id="off_per_act"),)
    draft = at_boundary(account(phases=phases, fees_billed=True), {}, {}, TERMS)
    assert draft.opening == Opening(DEC, Plan("off_per_act", ("express",)), 1, 1)
    assert amounts(draft.lines)[-2:] == [("fee", "base", D("10.00")), ("option", "express", D("30.00"))]


def test_a_phase_not_reached_yet_leaves_the_plan_as_it_is():
    phases = (Phase(after_periods=2, offer_id="off_per_act"),)
    draft = at_boundary(account(phases=phases, fees_billed=True), {}, {}, TERMS)
    assert draft.opening == Opening(DEC, BASIC_PLAN, 1, 1)


def test_a_phase_applies_over_a_change_scheduled_for_the_same_boundary():
    phases = (Phase(after_periods=1, offer_id="off_per_act"),)
    draft = at_boundary(account(phases=phases, pending_change=PLUS_PLAN, fees_billed=True), {}, {}, TERMS)
    # The change applies first, then the phase's offer, with the change's (no) options.
    assert draft.opening == Opening(DEC, Plan("off_per_act"), 1, 1)
    assert amounts(draft.lines)[-1:] == [("fee", "base", D("10.00"))]


def test_late_usage_bills_only_the_difference_with_tiers_and_included_units_where_they_were_left():
    billed = {key(NOV.start): BilledPeriod(NOV, BASIC_PLAN, used(montages=10, calls=900))}
    usage = usage_of((NOV, used(montages=12, calls=1300)))
    draft = at_boundary(account(DEC, 1, fees_billed=True), billed, usage, TERMS)
    late = draft.lines[:2]
    # calls billed: 900 - 100 = 800 x 0.50 = 400.00; now: 1000 x 0.50 + 200 x 0.40 = 580.00.
    # The 400 late calls rated on their own would be 300 x 0.50 = 150.00.
    assert amounts(late) == [("usage", "montage", D("2.40")), ("usage", "calls", D("180.00"))]
    assert [line.quantity for line in late] == [D(2), D(400)]
    assert all("late usage for the period 2026-11-01 to 2026-12-01" in line.description for line in late)
    assert all((line.period_start, line.period_end) == (NOV.start, NOV.end) for line in late)
    assert amounts(draft.lines[2:]) == [ZERO_MONTAGES, NO_CALLS, ("fee", "base", D("55.00")),
                                        ("option", "express", D("30.00"))]
    assert draft.billed[key(NOV.start)].usage == usage[key(NOV.start)]


def test_a_period_whose_usage_did_not_move_is_not_billed_again():
    billed = {key(NOV.start): BilledPeriod(NOV, BASIC_PLAN, used(montages=10))}
    draft = at_boundary(account(DEC, 1, fees_billed=True), billed, usage_of((NOV, used(montages=10))), TERMS)
    assert all(line.period_start >= DEC.start for line in draft.lines)
    assert key(NOV.start) not in draft.billed


def test_late_usage_is_rated_under_the_plan_its_period_was_billed_under():
    billed = {key(NOV.start): BilledPeriod(NOV, PLUS_PLAN, used(montages=10))}
    lines, records = late_usage(billed, usage_of((NOV, used(montages=14))), TERMS)
    assert amounts(lines) == [("usage", "montage", D("4.20"))]  # 4 x 1.05 under plus
    assert records == {key(NOV.start): BilledPeriod(NOV, PLUS_PLAN, used(montages=14))}


def test_late_usage_of_a_trial_is_never_charged():
    billed = {key(TRIAL.start): BilledPeriod(TRIAL, BASIC_PLAN, used(montages=1), free=True)}
    lines, records = late_usage(billed, usage_of((TRIAL, used(montages=50))), TERMS)
    assert (lines, records) == ([], {})


def test_late_usage_of_the_periods_before_the_closed_one_is_billed_while_paused():
    billed = {key(NOV.start): BilledPeriod(NOV, BASIC_PLAN, used(montages=10))}
    usage = usage_of((NOV, used(montages=11)), (DEC, used(montages=7)))
    draft = at_boundary(account(DEC, 1, paused=True, fees_billed=True), billed, usage, TERMS)
    assert amounts(draft.lines) == [("usage", "montage", D("1.20"))]  # November's 1 late montage only
    assert set(draft.billed) == {key(NOV.start)}


def test_a_boundary_after_a_change_bills_only_the_usage_since_the_change():
    inside = BilledUsage(DAY_10, used(montages=100, calls=80))
    changed = account(plan=PLUS_PLAN, fees_billed=True, billed_inside=inside)
    draft = at_boundary(changed, {}, usage_of((NOV, used(montages=150, calls=180))), TERMS)
    assert amounts(draft.lines) == [
        ("usage", "montage", D("52.50")),   # 50 more montages x 1.05
        ("usage", "calls", D("40.00")),     # 80 of the 100 included were used: (180 - 100) x 0.50
        ("fee", "base", D("79.00")),
    ]
    assert all((line.period_start, line.period_end) == (DAY_10, NOV.end) for line in draft.lines[:2])
    assert draft.billed[key(NOV.start)].usage == used(montages=150, calls=180)


def test_what_a_change_billed_before_a_pause_is_not_billed_again_after_the_resume():
    # Changed to plus on day 10 (100 montages billed), paused later in November.
    inside = BilledUsage(DAY_10, used(montages=100))
    paused = account(plan=PLUS_PLAN, paused=True, fees_billed=True, billed_inside=inside)
    usage = usage_of((NOV, used(montages=150)))
    first = at_boundary(paused, {}, usage, TERMS)
    assert first.lines == ()
    assert first.billed == {key(NOV.start): BilledPeriod(NOV, PLUS_PLAN, used(montages=100))}
    # Resumed in December: November's remaining 50 montages, 50 x 1.05.
    resumed = account(DEC, 1, plan=PLUS_PLAN, fees_billed=True, deferred=(key(NOV.start),))
    second = at_boundary(resumed, first.billed, usage, TERMS)
    assert amounts(second.lines)[:1] == [("usage", "montage", D("52.50"))]
    assert second.lines[0].period_start == NOV.start
    assert second.billed[key(NOV.start)].usage == used(montages=150)


def test_a_paused_subscription_ending_at_its_period_end_bills_the_usage_it_deferred():
    usage = usage_of((NOV, used(montages=10)), (DEC, used(montages=5)))
    ending = account(DEC, 1, paused=True, cancel_at_period_end=True, deferred=(key(NOV.start),))
    draft = at_boundary(ending, {}, usage, TERMS)
    assert amounts(draft.lines) == [
        ("usage", "montage", D("12.00")), NO_CALLS,   # November: 10 x 1.20
        ("usage", "montage", D("6.00")), NO_CALLS,    # December: 5 x 1.20
    ]
    assert draft.opening is None
    assert set(draft.billed) == {key(NOV.start), key(DEC.start)}


# --- cancel_now and change_now ----------------------------------------------

def test_the_first_invoice_holds_the_first_periods_fees_in_advance():
    draft = first_invoice(BASIC_PLAN, NOV, TERMS)
    assert amounts(draft.lines) == [("fee", "base", D("49.00")), ("option", "express", D("30.00"))]
    assert (draft.start, draft.end, draft.billed, draft.opening) == (NOV.start, NOV.end, {}, None)
    # January's first invoice is under the version in force then: 55.00.
    assert amounts(first_invoice(Plan("off_basic"), JAN, TERMS).lines) == [("fee", "base", D("55.00"))]


def test_a_resume_in_a_period_that_opened_while_paused_bills_the_rest_of_its_fees():
    # December (31 days) opened while paused; resumed on 11 December 00:00:
    # floor(21 days) = 21 whole days remain. 49 x 21/31 = 33.193.. -> 33.19;
    # 30 x 21/31 = 20.322.. -> 20.32.
    resumed = DEC.start + 10 * DAY
    draft = resume_now(account(DEC, 1, fees_billed=False), TERMS, resumed)
    assert amounts(draft.lines) == [("fee", "base", D("33.19")), ("option", "express", D("20.32"))]
    # In the period the pause began its fees were billed in advance: nothing.
    assert resume_now(account(DEC, 1, fees_billed=True), TERMS, resumed).lines == ()


def test_cancel_now_in_a_trial_bills_nothing():
    draft = cancel_now(account(TRIAL, -1), usage_of((TRIAL, used(montages=5))), TERMS, TRIAL.start + DAY)
    assert (draft.lines, draft.billed_inside) == ((), None)


def test_cancel_now_before_the_period_starts_bills_nothing():
    draft = cancel_now(account(fees_billed=True), {}, TERMS, NOV.start - DAY)
    assert (draft.lines, draft.billed_inside) == ((), None)


def test_cancel_now_bills_the_usage_so_far_and_credits_the_unused_fees():
    usage = usage_of((NOV, used(montages=3)))
    draft = cancel_now(account(fees_billed=True), usage, TERMS, DAY_10)
    assert amounts(draft.lines) == [
        ("usage", "montage", D("3.60")),        # 3 x 1.20
        NO_CALLS,
        ("proration", "base", D("-32.67")),     # 49 x 20/30 = 32.666...
        ("proration", "express", D("-20.00")),  # 30 x 20/30
    ]
    assert all(line.period_end == DAY_10 for line in draft.lines[:2])
    assert draft.billed_inside == BilledUsage(DAY_10, used(montages=3))
    assert draft.billed == {}


def test_cancel_now_credits_nothing_when_the_fees_were_not_billed():
    draft = cancel_now(account(fees_billed=False), usage_of((NOV, used(montages=3))), TERMS, DAY_10)
    assert amounts(draft.lines) == [("usage", "montage", D("3.60")), NO_CALLS]


def test_cancel_now_after_a_change_bills_only_the_usage_since_the_change():
    inside = BilledUsage(DAY_10, used(montages=100))
    later = DAY_10 + 5 * DAY  # 15 whole days remain of 30
    changed = account(plan=PLUS_PLAN, fees_billed=True, billed_inside=inside)
    draft = cancel_now(changed, usage_of((NOV, used(montages=110))), TERMS, later)
    assert amounts(draft.lines) == [
        ("usage", "montage", D("10.50")),       # 10 x 1.05; calls did not move: no line
        ("proration", "base", D("-39.50")),     # 79 x 15/30
    ]
    assert draft.lines[0].period_start == DAY_10
    assert draft.billed_inside == BilledUsage(later, used(montages=110))


def test_change_now_in_a_trial_bills_nothing():
    draft = change_now(account(TRIAL, -1), {}, TERMS, TRIAL.start + DAY, PLUS_PLAN)
    assert (draft.lines, draft.billed_inside) == ((), None)


def test_change_now_before_the_period_starts_bills_the_new_fees_in_full():
    draft = change_now(account(fees_billed=True), {}, TERMS, NOV.start - DAY, PLUS_PLAN)
    assert amounts(draft.lines) == [("fee", "base", D("79.00"))]
    assert draft.billed_inside is None


def test_change_now_rates_the_usage_under_the_old_terms_and_swaps_the_fees_for_the_rest():
    usage = usage_of((NOV, used(montages=100)))
    draft = change_now(account(fees_billed=True), usage, TERMS, DAY_10, PLUS_PLAN)
    assert amounts(draft.lines) == [
        ("usage", "montage", D("120.00")),      # 100 x 1.20, basic
        NO_CALLS,
        ("proration", "base", D("-32.67")),     # 49 x 20/30
        ("proration", "express", D("-20.00")),  # 30 x 20/30
        ("fee", "base", D("52.67")),            # 79 x 20/30 = 52.666...
    ]
    assert all((line.period_start, line.period_end) == (DAY_10, NOV.end) for line in draft.lines[2:])
    assert draft.billed_inside == BilledUsage(DAY_10, used(montages=100))


def test_change_now_swaps_no_fees_when_the_fees_were_not_billed():
    draft = change_now(account(fees_billed=False), usage_of((NOV, used(montages=1))), TERMS, DAY_10, PLUS_PLAN)
    assert amounts(draft.lines) == [("usage", "montage", D("1.20")), NO_CALLS]


# --- after_cancel -----------------------------------------------------------

def test_late_usage_of_the_period_canceled_in_reaches_the_final_invoice_once():
    canceled = account(fees_billed=True, billed_inside=BilledUsage(DAY_10, used(montages=3)))
    usage = usage_of((NOV, used(montages=5)))  # 2 montages read before the cancellation arrived after it
    draft = after_cancel(canceled, {}, usage, TERMS)
    assert amounts(draft.lines) == [("usage", "montage", D("2.40"))]  # 2 x 1.20
    assert (draft.lines[0].period_start, draft.lines[0].period_end) == (NOV.start, DAY_10)
    assert draft.billed_inside == BilledUsage(DAY_10, used(montages=5))
    again = after_cancel(account(fees_billed=True, billed_inside=draft.billed_inside), {}, usage, TERMS)
    assert again.lines == ()


def test_late_usage_of_a_period_billed_before_the_cancellation_is_billed_once():
    billed = {key(NOV.start): BilledPeriod(NOV, BASIC_PLAN, used(calls=100))}
    canceled = account(DEC, 1, fees_billed=True, billed_inside=BilledUsage(DEC.start + DAY, {}))
    usage = usage_of((NOV, used(calls=130)))
    draft = after_cancel(canceled, billed, usage, TERMS)
    assert amounts(draft.lines) == [("usage", "calls", D("15.00"))]  # the 100 included were used: 30 x 0.50
    assert (draft.start, draft.end) == (NOV.start, NOV.end)
    again = after_cancel(canceled, {**billed, **draft.billed}, usage, TERMS)
    assert (again.lines, again.billed) == ((), {})


def test_after_a_cancellation_at_period_end_late_usage_of_the_last_period_is_billed():
    billed = {key(NOV.start): BilledPeriod(NOV, BASIC_PLAN, used(montages=10))}
    draft = after_cancel(account(), billed, usage_of((NOV, used(montages=13))), TERMS)
    assert amounts(draft.lines) == [("usage", "montage", D("3.60"))]  # 3 x 1.20
    assert draft.billed_inside is None


def test_the_final_invoice_of_a_subscription_canceled_while_paused_bills_its_deferred_usage():
    canceled = account(DEC, 1, paused=True, deferred=(key(NOV.start),),
                       billed_inside=BilledUsage(DEC.start + DAY, {}))
    usage = usage_of((NOV, used(montages=10)))
    draft = after_cancel(canceled, {}, usage, TERMS)
    assert amounts(draft.lines) == [("usage", "montage", D("12.00")), NO_CALLS]
    assert set(draft.billed) == {key(NOV.start)}
    again = after_cancel(canceled, draft.billed, usage, TERMS)
    assert total(again.lines) == 0 and again.billed == {}


def test_a_canceled_subscription_with_nothing_new_has_an_empty_final_invoice():
    canceled = account(fees_billed=True, billed_inside=BilledUsage(DAY_10, used(montages=3)))
    draft = after_cancel(canceled, {}, usage_of((NOV, used(montages=3))), TERMS)
    assert (draft.lines, draft.billed) == ((), {})
    assert (draft.start, draft.end) == (NOV.start, NOV.end)


# --- same_usage -------------------------------------------------------------

def test_the_same_tallies_bill_the_same():
    assert same_usage(used(montages=3, calls=1), used(montages=3, calls=1))
    assert same_usage({}, {})


def test_a_meter_absent_on_one_side_and_empty_on_the_other_is_the_same():
    assert same_usage({"montages": MeterUsage()}, {})
    assert same_usage({}, {"montages": MeterUsage()})


def test_a_meter_absent_on_one_side_and_used_on_the_other_differs():
    assert not same_usage({}, used(montages=1))
    assert not same_usage(used(montages=1), {})


def test_a_reading_of_zero_differs_from_no_reading():
    # A `max` or `last` meter read at 0 is a reading: its period is not the same as unread.
    assert not same_usage({}, {"level": MeterUsage(D(0), D(0), D(0))})


def test_tallies_that_differ_in_any_aggregate_differ():
    assert not same_usage(used(montages=3), used(montages=4))
    assert not same_usage({"level": MeterUsage(D(5), D(5), D(5))}, {"level": MeterUsage(D(5), D(5), D(2))})


def test_late_usage_concerns_only_periods_already_invoiced():
    # December was never invoiced: its usage is the coming boundary's, not late.
    billed = {key(NOV.start): BilledPeriod(NOV, BASIC_PLAN, used(montages=10))}
    usage = usage_of((NOV, used(montages=10)), (DEC, used(montages=4)))
    assert late_usage(billed, usage, TERMS) == ([], {})


def test_late_usage_before_an_instant_leaves_later_periods_alone():
    billed = {key(NOV.start): BilledPeriod(NOV, BASIC_PLAN, used(montages=1)),
              key(DEC.start): BilledPeriod(DEC, BASIC_PLAN, used(montages=1))}
    usage = usage_of((NOV, used(montages=2)), (DEC, used(montages=2)))
    lines, records = late_usage(billed, usage, TERMS, before=DEC.start)
    assert amounts(lines) == [("usage", "montage", D("1.20"))]
    assert set(records) == {key(NOV.start)}
