"""What a mid-period event bills: a change or a cancellation effective
immediately, a resume in a period that opened while paused, and what is left
of the period's usage for its boundary afterwards.

API.md:
- change immediately: the usage so far is rated under the old terms, the
  unused old fees are credited, the new fees are charged for the rest of the
  period, on one invoice now; the period anchor does not move;
- cancel immediately: an invoice now with the usage so far and a credit for
  the unused part of the period's fees.

Usage of a period is kept per period (from its start), so after such an
event the period's usage is partly billed. The part billed is remembered as
the period's usage at that moment (`billed`); later lines of the same period
rate the difference the rest of the usage makes: `rate(all) - rate(billed)`
under the terms then in force, component by component (`rating.rate_late_usage`).
So tiers and included units continue where the billed part left them, a
`max` or `last` meter is billed only for what it grew, and no unit is billed
twice.

Fees are credited or charged only when the period's fees were billed in
advance (`fees_billed`): a period still waiting for its opening invoice (a
start in the future, a trial, a pause) has nothing to credit, and its opening
invoice uses whatever terms are in force by then.

Pure: terms are catalog Offers of the right version, amounts Decimal.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from chalicelib.domain.catalog import Offer
from chalicelib.domain.periods import Period
from chalicelib.domain.rating import InvoiceLine, MeterUsage, credit_unused_fees, prorate_fees, rate_late_usage, rate_usage


@dataclass(frozen=True, slots=True)
class PricedPlan:
    """A plan with its offer's version resolved: what rating needs."""

    terms: Offer
    options: tuple[str, ...] = ()
    price_overrides: Mapping | None = None


@dataclass(frozen=True, slots=True)
class BilledUsage:
    """What invoices issued inside a period billed of its usage: the
    period's usage as it stood at `until`."""

    until: datetime
    meters: Mapping[str, MeterUsage]


def usage_lines(
    plan: PricedPlan,
    usage: Mapping[str, MeterUsage],
    billed: BilledUsage | None,
    period: Period,
    end: datetime,
) -> list[InvoiceLine]:
    """The usage of `period` not billed yet, up to `end`, in arrears, under `plan`.

    `usage` is the period's whole usage so far, `billed` what earlier
    invoices of the period already billed of it (None: nothing). The lines
    cover [billed.until or the period start, end)."""
    end = min(max(end, period.start), period.end)
    if billed is None:
        return rate_usage(plan.terms, plan.price_overrides, usage, Period(period.start, end))
    part = Period(min(billed.until, end), end)
    lines = rate_late_usage(plan.terms, plan.price_overrides, billed.meters, usage, part)
    # rate_late_usage names a late line by its period; here it is the rest
    # of a period that an earlier invoice billed up to `part.start`.
    when = f"{_stamp(part.start)} to {_stamp(part.end)}"
    return [line._replace(description=f"{line.component}: usage from {when}") for line in lines]


def change_now_lines(
    old: PricedPlan,
    new: PricedPlan,
    usage: Mapping[str, MeterUsage],
    billed: BilledUsage | None,
    period: Period,
    at: datetime,
    *,
    fees_billed: bool,
) -> list[InvoiceLine]:
    """The invoice of a change effective at `at` inside `period`: usage so far
    (old terms), credit of the old fees' unused part, new fees for the rest."""
    if old.terms.currency != new.terms.currency:
        raise ValueError("a change never moves a subscription to another currency")
    lines = usage_lines(old, usage, billed, period, at)
    if fees_billed:
        lines += credit_unused_fees(old.terms, old.options, old.price_overrides, period, at)
        lines += prorate_fees(new.terms, new.options, new.price_overrides, period, at)
    return lines


def cancel_now_lines(
    plan: PricedPlan,
    usage: Mapping[str, MeterUsage],
    billed: BilledUsage | None,
    period: Period,
    at: datetime,
    *,
    fees_billed: bool,
) -> list[InvoiceLine]:
    """The last invoice of a subscription canceled at `at`: usage so far and
    the credit of the fees' unused part."""
    lines = usage_lines(plan, usage, billed, period, at)
    if fees_billed:
        lines += credit_unused_fees(plan.terms, plan.options, plan.price_overrides, period, at)
    return lines


def resume_lines(plan: PricedPlan, period: Period, at: datetime, *, fees_billed: bool) -> list[InvoiceLine]:
    """Resuming inside a period that opened while paused (its fees never
    billed) charges the fees for the rest of it; resuming in the period the
    pause began charges nothing (its fees were billed in advance)."""
    if fees_billed:
        return []
    return prorate_fees(plan.terms, plan.options, plan.price_overrides, period, at)


def worth_invoicing(lines: list[InvoiceLine]) -> bool:
    """An event's invoice is issued only when it moves money: a cancellation
    with no usage and nothing to credit leaves no zero invoice behind."""
    return any(line.amount for line in lines)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
