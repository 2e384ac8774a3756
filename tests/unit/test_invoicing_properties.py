"""Invariants of the invoice rule (domain/invoicing), by hypothesis.

The expected shares of a period follow API.md's proration, written out here
on its own: the remaining whole days at `at` are floor((end - at) / 1 day),
out of the period's days (UTC periods, so no daylight-saving hour)."""
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain import invoicing
from chalicelib.domain.invoicing import Account, Draft, key
from chalicelib.domain.lifecycle import Plan
from chalicelib.domain.periods import Period
from chalicelib.domain.proration import worth_invoicing
from chalicelib.domain.rating import MeterUsage, rate_usage
from tests.unit.invoicing_catalog import (
    BASIC, D, DAY, NOV, PER_ACT, PLUS, TERMS, TRIAL, account, offer, terms_from, total, used,
)

CENT = D("0.01")
HALF_CENT = D("0.005")  # the most a line's rounding moves it
FEE_KINDS = ("fee", "option", "proration")
FEES = {"off_basic": BASIC, "off_plus": PLUS, "off_per_act": PER_ACT}
PLANS = {"off_basic": Plan("off_basic", ("express",)), "off_plus": Plan("off_plus"),
         "off_per_act": Plan("off_per_act")}


def period_fee(plan: Plan) -> Decimal:
    """What a plan's fees come to for a whole period (flat components and options)."""
    terms = FEES[plan.offer_id]
    flat = sum((c.amount for c in terms.components if c.type == "flat"), D(0))
    return flat + sum((o.amount for o in terms.options if o.code in plan.options), D(0))


def remaining_share(period: Period, at: datetime) -> Decimal:
    days = (period.end - period.start) // DAY
    if at <= period.start:
        return D(1)
    return D(min(max((period.end - at) // DAY, 0), days)) / D(days)


def instants_in(period: Period):
    seconds = int((period.end - period.start).total_seconds())
    return st.integers(0, seconds - 1).map(lambda s: period.start + timedelta(seconds=s))


# --- 1. prorated pieces of a period sum to the whole ----------------------

# basic's fees under another offer: 49.00 and the express option at 30.00
TWINS = terms_from({"off_basic": [(None, 1, BASIC)], "off_twin": [(None, 1, offer("twin", "49.00", "9.99"))]})


@settings(max_examples=150, deadline=None)
@given(at=instants_in(NOV))
def test_a_change_at_any_instant_to_the_same_prices_credits_exactly_what_it_charges(at):
    draft = invoicing.change_now(account(fees_billed=True), {}, TWINS, at, Plan("off_twin", ("express",)))
    credit, charge = total(draft.lines, "proration"), total(draft.lines, "fee", "option")
    assert credit <= 0 <= charge
    assert abs(credit + charge) <= CENT


@settings(max_examples=150, deadline=None)
@given(at=instants_in(NOV))
def test_the_credit_of_the_unused_part_and_the_used_part_make_the_full_fee(at):
    full = period_fee(PLANS["off_basic"])  # 49.00 + 30.00
    draft = invoicing.cancel_now(account(fees_billed=True), {}, TERMS, at)
    unused = -total(draft.lines, "proration")
    used_part = full * (1 - remaining_share(NOV, at))
    assert abs(unused + used_part - full) <= CENT


@settings(max_examples=150, deadline=None)
@given(data=st.data(), count=st.integers(1, 4))
def test_the_fees_of_a_period_cut_by_changes_are_the_sum_of_its_pieces(data, count):
    instants = sorted(data.draw(st.lists(instants_in(NOV), min_size=count, max_size=count)))
    plan = PLANS["off_basic"]
    subscription = account(plan=plan, fees_billed=True)
    paid, lines = period_fee(plan), 0  # the period's fees in advance, then what each change credits and charges
    expected, share_before = D(0), D(1)
    for at in instants:
        new = PLANS[data.draw(st.sampled_from(sorted(set(PLANS) - {plan.offer_id})))]
        draft = invoicing.change_now(subscription, {}, TERMS, at, new)
        paid += total(draft.lines, *FEE_KINDS)
        lines += sum(1 for line in draft.lines if line.kind in FEE_KINDS)
        # The plan left at `at` ran from the previous change to it.
        expected += period_fee(plan) * (share_before - remaining_share(NOV, at))
        share_before = remaining_share(NOV, at)
        plan, subscription = new, replace(subscription, plan=new, billed_inside=draft.billed_inside)
    expected += period_fee(plan) * share_before
    assert abs(paid - expected) <= HALF_CENT * lines


# --- 2. two changes in a day ----------------------------------------------

@settings(max_examples=200, deadline=None)
@given(data=st.data(), first=instants_in(NOV), gap=st.integers(0, 24 * 3600 - 1))
def test_two_changes_in_a_day_never_charge_more_than_the_dearer_plan_for_that_day(data, first, gap):
    second = min(first + timedelta(seconds=gap), NOV.end - timedelta(seconds=1))
    a = PLANS[data.draw(st.sampled_from(sorted(PLANS)))]
    b = PLANS[data.draw(st.sampled_from(sorted(set(PLANS) - {a.offer_id})))]
    c = PLANS[data.draw(st.sampled_from(sorted(set(PLANS) - {b.offer_id})))]
    one = invoicing.change_now(account(plan=a, fees_billed=True), {}, TERMS, first, b)
    two = invoicing.change_now(account(plan=b, fees_billed=True, billed_inside=one.billed_inside), {}, TERMS,
                               second, c)
    fee_lines = [line for line in (*one.lines, *two.lines) if line.kind in FEE_KINDS]
    paid = period_fee(a) + total(fee_lines)
    before, after = remaining_share(NOV, first), remaining_share(NOV, second)
    dearest = max(period_fee(a), period_fee(b), period_fee(c))
    # a until the day of the changes, the dearest of the three for it, c for the rest.
    ceiling = period_fee(a) * (1 - before) + dearest * (before - after) + period_fee(c) * after
    assert paid <= ceiling + HALF_CENT * len(fee_lines)


# --- 3. usage is billed exactly once --------------------------------------

UNIT = D("1.20")
SAME_UNIT_PRICE = terms_from({
    "off_a": [(None, 1, offer("a", "30.00", "1.20"))],
    "off_b": [(None, 1, offer("b", "50.00", "1.20"))],
    "off_c": [(None, 1, offer("c", "5.00", "1.20", express=None))],
})
TIERED = offer("tiered", "20.00", "1.20")  # calls graduated beyond 100 included


@dataclass
class Subscription:
    """A subscription moved by the pure rule only, its drafts applied to it
    as the services apply them (issuing: boundary and final invoice;
    subscriptions: change, cancel, pause, resume)."""

    account: Account
    terms: invoicing.TermsAt
    now: datetime
    billed: dict = field(default_factory=dict)
    usage: dict = field(default_factory=dict)
    periods: dict = field(default_factory=dict)  # key -> (period, free)
    drafts: list = field(default_factory=list)
    canceled: bool = False

    def __post_init__(self):
        self.periods[key(self.account.period.start)] = (self.account.period, self.account.in_trial)

    def use(self, start_key: str, montages: int, calls: int) -> None:
        meters = self.usage.setdefault(start_key, {})
        for meter, quantity in (("montages", montages), ("calls", calls)):
            meters[meter] = MeterUsage(meters.get(meter, MeterUsage()).total + quantity)

    def issue(self, draft: Draft, *, event: bool = False) -> Draft:
        """An event's draft becomes an invoice only when it moves money (proration.worth_invoicing)."""
        if not event or worth_invoicing(list(draft.lines)):
            self.drafts.append(draft)
        return draft

    def wait(self, hours: int) -> None:
        if not self.canceled:
            self.now = min(self.now + timedelta(hours=hours), self.account.period.end - timedelta(seconds=1))

    def change_now(self, plan: Plan) -> None:
        acc = self.account
        if self.canceled or acc.paused or acc.cancel_at_period_end or plan == acc.plan:
            return
        if not acc.in_trial:
            draft = self.issue(invoicing.change_now(acc, self.usage, self.terms, self.now, plan), event=True)
            if worth_invoicing(list(draft.lines)):
                acc = replace(acc, billed_inside=draft.billed_inside)
        self.account = replace(acc, plan=plan, pending_change=None)

    def schedule(self, plan: Plan) -> None:
        acc = self.account
        if not (self.canceled or acc.paused or acc.cancel_at_period_end):
            self.account = replace(acc, pending_change=None if plan == acc.plan else plan)

    def pause(self) -> None:
        if not (self.canceled or self.account.in_trial):
            self.account = replace(self.account, paused=True)

    def resume(self) -> None:
        if not self.canceled and self.account.paused:
            self.account = replace(self.account, paused=False, fees_billed=True)

    def cancel_at_period_end(self) -> None:
        if not self.canceled:
            self.account = replace(self.account, cancel_at_period_end=True)

    def boundary(self) -> None:
        if self.canceled:
            return
        acc = self.account
        self.now = acc.period.end
        draft = self.issue(invoicing.at_boundary(acc, self.billed, self.usage, self.terms))
        self.billed.update(draft.billed)
        if draft.opening is None:
            self.canceled = True
            self.account = replace(acc, billed_inside=None, deferred=())
            return
        opening = draft.opening
        # A period closed while paused waits for the resume; the first boundary after it bills them all.
        deferred = tuple(dict.fromkeys((*acc.deferred, key(acc.period.start)))) if acc.paused else ()
        self.account = replace(acc, period=opening.period, period_index=opening.index, plan=opening.plan,
                               pending_change=None, fees_billed=not acc.paused, billed_inside=None,
                               deferred=deferred)
        self.periods[key(opening.period.start)] = (opening.period, False)

    def cancel_now(self) -> None:
        if self.canceled:
            return
        draft = self.issue(invoicing.cancel_now(self.account, self.usage, self.terms, self.now), event=True)
        if draft.billed_inside is not None:
            self.account = replace(self.account, billed_inside=draft.billed_inside)
        self.canceled = True

    def final(self) -> None:
        if not self.canceled:
            return
        draft = invoicing.after_cancel(self.account, self.billed, self.usage, self.terms)
        if draft.lines:
            self.issue(draft)
            self.billed.update(draft.billed)
            if draft.billed_inside is not None:
                self.account = replace(self.account, billed_inside=draft.billed_inside)

    def close(self) -> None:
        """Bill everything still owed: the last boundary, then the final invoice."""
        self.cancel_at_period_end()
        self.boundary()
        self.final()

    def usage_lines(self):
        return [line for draft in self.drafts for line in draft.lines if line.kind == "usage"]


def events(plans):
    quantity = st.integers(0, 400)
    return st.lists(st.one_of(
        st.tuples(st.just("use"), quantity, quantity),
        st.tuples(st.just("late"), st.integers(0, 20), quantity, quantity),
        st.tuples(st.just("wait"), st.integers(1, 24 * 40)),
        st.tuples(st.sampled_from(["change_now", "schedule"]), st.sampled_from(plans)) if plans else st.nothing(),
        st.tuples(st.sampled_from(["boundary", "boundary", "pause", "resume", "cancel_at_period_end",
                                   "cancel_now", "final"])),
    ), max_size=30)


def run(subscription: Subscription, script) -> Subscription:
    for name, *args in script:
        if name == "use":
            if not subscription.canceled:
                subscription.use(key(subscription.account.period.start), *args)
        elif name == "late":
            # Usage read before now (before the cancellation, once canceled), arriving now.
            starts = sorted(subscription.periods)
            subscription.use(starts[args[0] % len(starts)], *args[1:])
        elif name in ("change_now", "schedule"):
            getattr(subscription, name)(Plan(args[0]))
        else:
            getattr(subscription, name)(*args)
    subscription.close()
    return subscription


def start(plan: Plan, terms, trial: bool) -> Subscription:
    if trial:
        return Subscription(account(TRIAL, -1, plan=plan), terms, TRIAL.start)
    return Subscription(account(plan=plan, fees_billed=True), terms, NOV.start)


def paid_periods(subscription: Subscription):
    return [(start_key, period) for start_key, (period, free) in subscription.periods.items() if not free]


@settings(max_examples=200, deadline=None)
@given(script=events(["off_a", "off_b", "off_c"]), trial=st.booleans())
def test_usage_is_billed_exactly_once_across_changes_pauses_cancellations_and_late_readings(script, trial):
    subscription = run(start(Plan("off_a"), SAME_UNIT_PRICE, trial), script)
    periods = paid_periods(subscription)
    montages = sum(subscription.usage.get(k, {}).get("montages", MeterUsage()).total for k, _ in periods)
    billed = [line for line in subscription.usage_lines() if line.component == "montage"]
    assert sum(line.quantity for line in billed) == montages
    assert total(billed) == montages * UNIT
    # The plans share their call tiers: the calls come to each period's rated once, under any of them.
    calls = [line for line in subscription.usage_lines() if line.component == "calls"]
    a = SAME_UNIT_PRICE("off_a", NOV.start)[1]
    assert total(calls) == sum((total(rate_usage(a, None, {"calls": subscription.usage.get(k, {}).get(
        "calls", MeterUsage())}, period)) for k, period in periods), D(0))
    # Nothing is left for another final invoice.
    drafts = len(subscription.drafts)
    subscription.final()
    assert len(subscription.drafts) == drafts


@settings(max_examples=150, deadline=None)
@given(script=events([]), trial=st.booleans())
def test_tiered_usage_with_included_units_is_billed_as_its_period_rated_once(script, trial):
    terms = terms_from({"off_tiered": [(None, 1, TIERED)]})
    subscription = run(start(Plan("off_tiered"), terms, trial), script)
    expected = sum((total(rate_usage(TIERED, None, subscription.usage.get(k, {}), period))
                    for k, period in paid_periods(subscription)), D(0))
    assert total(subscription.usage_lines()) == expected


def test_the_simulation_bills_a_period_its_usage_once_by_hand():
    # 10 montages in November, 4 of them read late, under a plan changed on day 10.
    subscription = Subscription(account(plan=Plan("off_a"), fees_billed=True), SAME_UNIT_PRICE, NOV.start)
    november = key(NOV.start)
    run(subscription, [("use", 3, 0), ("wait", 24 * 9 + 8), ("change_now", "off_b"), ("use", 3, 0),
                       ("boundary",), ("late", 0, 4, 0)])
    # 3 x 1.20 at the change, 3 x 1.20 at November's end, then at December's end
    # November's 4 late (4 x 1.20) and December's none.
    assert [line.amount for line in subscription.usage_lines() if line.component == "montage"] == [
        D("3.60"), D("3.60"), D("4.80"), D("0.00")]
    assert subscription.billed[november].usage == used(montages=10, calls=0)
