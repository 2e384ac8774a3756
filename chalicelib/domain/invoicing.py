"""What an invoice holds: the one rule.

Given a subscription as billing sees it (`Account`), what earlier invoices
billed of each period's usage (`BilledPeriod`), the usage of each period as
it stands, and the terms in force (`TermsAt`: the offer's version at an
instant), these functions return the lines of the invoice due at an
instant, and what will then be billed:

- `at_boundary`: the end of the current period: late usage of periods
  invoiced before, the usage of periods closed while paused (once resumed,
  or at the last boundary), the closed period's usage in arrears (none in a
  trial, deferred while paused unless the subscription ends there), the
  next period's fees in advance under the plan it runs on (a change
  scheduled for the period end, then the phases), none when a cancellation
  is scheduled;
- `first_invoice`: the first period's fees and options, in advance;
- `resume_now`: the rest of a period's fees when it opened while paused;
- `cancel_now`: the usage of the current period so far and the credit of
  the unused part of its fees (when they were billed);
- `change_now`: the usage so far under the old terms, the credit of the
  old fees' unused part, the new fees for the rest of the period;
- `after_cancel`: the last invoice of a canceled subscription: late usage
  of any period it was billed for, the period it was canceled in included,
  and the usage of periods closed while paused that no resume billed.

The billing run, a cancellation, a change and the upcoming invoice all ask
these; nothing else decides what an invoice holds.

Usage of a period is billed once across any sequence of events: what was
billed of a period is remembered as its usage at that moment, and a later
invoice bills only what the rest of the usage adds (`rate(all) -
rate(billed)`, component by component, `rating.rate_late_usage`), so tiers
and included units continue where the billed part left them.

Pure: no clock, no I/O; terms come through the `TermsAt` the caller hands in.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from chalicelib.domain import proration
from chalicelib.domain.catalog import Offer
from chalicelib.domain.lifecycle import Phase, Plan, next_plan
from chalicelib.domain.periods import (
    Interval, Period, instant_text, parse_instant_text, period_bounds, period_index_at,
)
from chalicelib.domain.proration import BilledUsage, PricedPlan
from chalicelib.domain.rating import InvoiceLine, MeterUsage, rate_fees, rate_late_usage, rate_usage

# (offer id, instant) -> (version, the offer's terms in force at that instant)
TermsAt = Callable[[str, datetime], tuple[int, Offer]]
# period start (ISO, as the store keys it) -> meter -> usage
UsageByPeriod = Mapping[str, Mapping[str, MeterUsage]]


@dataclass(frozen=True, slots=True)
class BilledPeriod:
    """What invoices billed of one period: its usage as it stood then, under
    which plan; `free`: a trial period, whose usage is never charged."""

    period: Period
    plan: Plan
    usage: Mapping[str, MeterUsage]
    free: bool = False


@dataclass(frozen=True, slots=True)
class Account:
    """A subscription as billing sees it.

    `period` is the current period (index `period_index`, -1 for a trial);
    `fees_billed`: its fees are on an invoice already (in advance);
    `billed_inside`: what invoices issued inside it (a change now) billed of
    its usage; `deferred`: starts of periods closed while paused, whose usage
    waits for the resume."""

    anchor: datetime
    interval: Interval
    timezone: str
    period: Period
    period_index: int
    plan: Plan
    pending_change: Plan | None = None
    phases: tuple[Phase, ...] = ()
    paused: bool = False
    cancel_at_period_end: bool = False
    fees_billed: bool = False
    billed_inside: BilledUsage | None = None
    deferred: tuple[str, ...] = ()

    @property
    def in_trial(self) -> bool:
        return self.period_index < 0


@dataclass(frozen=True, slots=True)
class Opening:
    """The period a boundary opens, and what it runs on."""

    period: Period
    plan: Plan
    version: int
    index: int


@dataclass(frozen=True)
class Draft:
    """An invoice's lines, the span they cover, and what is billed once it
    is issued: `billed` (period start -> BilledPeriod) replaces the records
    of those periods; `billed_inside` is the current period's, after a
    mid-period event; `opening` the period a boundary opens (None: none)."""

    lines: tuple[InvoiceLine, ...]
    start: datetime
    end: datetime
    billed: Mapping[str, BilledPeriod] = field(default_factory=dict)
    billed_inside: BilledUsage | None = None
    opening: Opening | None = None


def key(moment: datetime) -> str:
    """A period's key: its start as the store writes it."""
    return instant_text(moment)


def late_usage(billed: Mapping[str, BilledPeriod], usage: UsageByPeriod, terms: TermsAt,
               before: datetime | None = None) -> tuple[list[InvoiceLine], dict[str, BilledPeriod]]:
    """Usage that arrived (or was corrected) after its period was invoiced,
    for the periods that start before `before` (None: all): one line per
    component whose amount or quantity moved, under the plan the period was
    billed under, and the periods' records as they will then stand."""
    lines: list[InvoiceLine] = []
    updated: dict[str, BilledPeriod] = {}
    for start_key in sorted(billed):
        record = billed[start_key]
        if record.free or (before is not None and record.period.start >= before):
            continue
        now = usage.get(start_key, {})
        if same_usage(record.usage, now):
            continue
        _, offer = terms(record.plan.offer_id, record.period.start)
        lines += rate_late_usage(offer, record.plan.price_overrides, record.usage, now, record.period)
        updated[start_key] = BilledPeriod(record.period, record.plan, dict(now))
    return lines, updated


def at_boundary(account: Account, billed: Mapping[str, BilledPeriod], usage: UsageByPeriod,
                terms: TermsAt) -> Draft:
    """The invoice at the end of the current period (see the module's docstring)."""
    closed = account.period
    closed_key = key(closed.start)
    # A last boundary bills what a pause deferred: no resume will follow.
    deferring = account.paused and not account.cancel_at_period_end
    waiting = set(account.deferred)
    # A deferred period's record is what a change billed of it before the
    # pause: its rest waits with it, and is not late usage.
    lines, records = late_usage({k: r for k, r in billed.items() if k not in waiting}, usage, terms,
                                before=closed.start)
    starts, ends = [closed.start], [closed.end]

    if not deferring:
        lines += _deferred_usage(account, account.deferred, billed, usage, terms, records)
        starts += [parse_instant_text(start_key) for start_key in account.deferred]

    closed_usage = usage.get(closed_key, {})
    if account.in_trial:
        records[closed_key] = BilledPeriod(closed, account.plan, dict(closed_usage), free=True)
    elif deferring:
        if account.billed_inside is not None:
            # A change now billed part of it before the pause: the resume bills the rest only.
            records[closed_key] = BilledPeriod(closed, account.plan, dict(account.billed_inside.meters))
    else:
        _, offer = terms(account.plan.offer_id, closed.start)
        priced = PricedPlan(offer, account.plan.options, account.plan.price_overrides)
        lines += proration.usage_lines(priced, closed_usage, account.billed_inside, closed, closed.end)
        records[closed_key] = BilledPeriod(closed, account.plan, dict(closed_usage))

    opening = None
    if not account.cancel_at_period_end:
        index = account.period_index + 1
        period = period_bounds(account.anchor, account.interval, index, account.timezone)
        plan, _ = next_plan(account.plan, account.pending_change, account.phases, index)
        version, offer = terms(plan.offer_id, period.start)
        if not account.paused:
            lines += rate_fees(offer, plan.options, plan.price_overrides, period)
        opening = Opening(period, plan, version, index)
        ends.append(period.end)
    return Draft(tuple(lines), min(starts), max(ends), records, None, opening)


def first_invoice(plan: Plan, period: Period, terms: TermsAt) -> Draft:
    """The first invoice of a subscription without a trial: the first
    period's fees and options, in advance (a trial's comes at its end, from
    `at_boundary`)."""
    _, offer = terms(plan.offer_id, period.start)
    return Draft(tuple(rate_fees(offer, plan.options, plan.price_overrides, period)), period.start, period.end)


def resume_now(account: Account, terms: TermsAt, at: datetime) -> Draft:
    """The invoice of a resume at `at`: in a period that opened while paused
    (its fees never billed), the fees for the rest of it; in the period the
    pause began, nothing (its fees were billed in advance)."""
    period = account.period
    lines = proration.resume_lines(_priced(account.plan, period, terms), period, at, fees_billed=account.fees_billed)
    return Draft(tuple(lines), period.start, period.end)


def cancel_now(account: Account, usage: UsageByPeriod, terms: TermsAt, at: datetime) -> Draft:
    """The invoice of a cancellation effective at `at`: the current period's
    usage so far and the credit of its fees' unused part. Nothing in a
    trial, or before the period starts."""
    period = account.period
    if account.in_trial or at < period.start:
        return Draft((), period.start, period.end)
    priced = _priced(account.plan, period, terms)
    now = usage.get(key(period.start), {})
    lines = proration.cancel_now_lines(priced, now, account.billed_inside, period, at,
                                       fees_billed=account.fees_billed)
    return Draft(tuple(lines), period.start, period.end, billed_inside=_inside(period, now, at))


def change_now(account: Account, usage: UsageByPeriod, terms: TermsAt, at: datetime, new: Plan) -> Draft:
    """The invoice of a change to `new` effective at `at`: usage so far
    under the old terms, credit of the old fees' unused part, new fees for
    the rest of the period. Nothing in a trial. Before the period starts,
    the first invoice is simply the new terms' fees."""
    period = account.period
    if account.in_trial:
        return Draft((), period.start, period.end)
    new_priced = _priced(new, period, terms)
    if at < period.start:
        lines = rate_fees(new_priced.terms, new.options, new.price_overrides, period)
        return Draft(tuple(lines), period.start, period.end)
    now = usage.get(key(period.start), {})
    lines = proration.change_now_lines(_priced(account.plan, period, terms), new_priced, now,
                                       account.billed_inside, period, at, fees_billed=account.fees_billed)
    return Draft(tuple(lines), period.start, period.end, billed_inside=_inside(period, now, at))


def after_cancel(account: Account, billed: Mapping[str, BilledPeriod], usage: UsageByPeriod,
                 terms: TermsAt) -> Draft:
    """The last invoice of a canceled subscription: late usage of the
    periods it was invoiced for, the one it was canceled in included
    (`billed_inside`: what the cancellation's invoice billed of it), and
    the periods closed while paused that no resume billed (`deferred`)."""
    lines, records = late_usage(billed, usage, terms)
    lines += _deferred_usage(account, [k for k in account.deferred if k not in billed], billed, usage, terms,
                             records)
    inside = account.billed_inside
    period = account.period
    if inside is not None and key(period.start) not in billed:
        now = usage.get(key(period.start), {})
        if not same_usage(inside.meters, now):
            _, offer = terms(account.plan.offer_id, period.start)
            lines += rate_late_usage(offer, account.plan.price_overrides, inside.meters, now,
                                     Period(period.start, max(inside.until, period.start)))
            inside = BilledUsage(inside.until, dict(now))
    starts = [r.period.start for r in records.values()] or [period.start]
    ends = [r.period.end for r in records.values()] or [period.end]
    return Draft(tuple(lines), min(starts), max(ends), records, inside)


def same_usage(before: Mapping[str, MeterUsage], now: Mapping[str, MeterUsage]) -> bool:
    """Whether two tallies of a period bill the same (a meter absent on one
    side and empty on the other is the same)."""
    for meter in set(before) | set(now):
        a, b = before.get(meter), now.get(meter)
        if a is None or b is None:
            present = a or b
            if present.total or present.maximum is not None:
                return False
            continue
        if a != b:
            return False
    return True


def _deferred_usage(account: Account, start_keys, billed: Mapping[str, BilledPeriod], usage: UsageByPeriod,
                    terms: TermsAt, records: dict[str, BilledPeriod]) -> list[InvoiceLine]:
    """The usage of periods closed while paused, added to `records`: all of
    it under the current plan, or, for a period a change billed part of
    before the pause, the rest under the plan it was billed under."""
    lines: list[InvoiceLine] = []
    for start_key in start_keys:
        period = _period_at(account, start_key)
        now = usage.get(key(period.start), {})
        record = billed.get(start_key)
        if record is None:
            _, offer = terms(account.plan.offer_id, period.start)
            lines += rate_usage(offer, account.plan.price_overrides, now, period)
            plan = account.plan
        else:
            _, offer = terms(record.plan.offer_id, period.start)
            lines += rate_late_usage(offer, record.plan.price_overrides, record.usage, now, period)
            plan = record.plan
        records[key(period.start)] = BilledPeriod(period, plan, dict(now))
    return lines


def _priced(plan: Plan, period: Period, terms: TermsAt) -> PricedPlan:
    _, offer = terms(plan.offer_id, period.start)
    return PricedPlan(offer, plan.options, plan.price_overrides)


def _inside(period: Period, usage: Mapping[str, MeterUsage], at: datetime) -> BilledUsage:
    return BilledUsage(min(max(at, period.start), period.end), dict(usage))


def _period_at(account: Account, start_key: str) -> Period:
    start = parse_instant_text(start_key)
    index = period_index_at(account.anchor, account.interval, start, account.timezone)
    return period_bounds(account.anchor, account.interval, index, account.timezone)
