"""The subscription's states, the transitions between them, and what each
next period runs on.

A state is a `status` plus two flags:

- status (API.md): `incomplete` (something is due and there is no card
  yet), `trialing`, `active`, `past_due` (a charge failed, retries
  scheduled), `canceled`;
- `cancel_at_period_end`: a cancellation is scheduled for the end of the
  current period (trialing, active or past_due);
- `paused`: no fees from the next boundary on, usage still recorded.

Why paused is a flag and not a status: the status says where the money
stands, pausing says whether fees are billed, and the two move apart. A
subscription is paused only from `active`, but an invoice issued before the
pause can still fail its retries while paused, so `past_due` and paused go
together; were paused a status, that fact would be lost or need a second
status. API.md's statuses stay exactly its five.

`transition(state, action, context)` is the whole machine: the new state,
or `Refused` (a 409) whose message says why and whose `reason` is a short
stable code. The merchant's actions are `MERCHANT_ACTIONS`; the billing run
and the payments use `SYSTEM_ACTIONS`, which never refuse a canceled
subscription (it stays canceled whatever its last invoices do) and are not
bound by a commitment.

Commitment (`commitment_months` of the offer): counted from the first paid
period (the end of the trial), so a trial can always be ended. A merchant's
cancellation whose effect (now, or the period end) falls before
`commitment_ends_at` is refused (`commitment_active`) unless the platform
operator forces it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from chalicelib.domain.errors import Conflict

STATUSES = ("incomplete", "trialing", "active", "past_due", "canceled")
LIVE_STATUSES = ("incomplete", "trialing", "active", "past_due")

MERCHANT_ACTIONS = ("change", "cancel_now", "cancel_at_period_end", "reactivate", "pause", "resume")
# payment_succeeded / payment_failed: a charge of one of its invoices;
# period_ended: a boundary was billed (the trial's end included);
# payment_exhausted: the last retry of an invoice failed.
SYSTEM_ACTIONS = ("payment_succeeded", "payment_failed", "period_ended", "payment_exhausted")
ACTIONS = MERCHANT_ACTIONS + SYSTEM_ACTIONS


@dataclass(frozen=True, slots=True)
class State:
    """Where a subscription stands. Only reachable combinations can be built."""

    status: str
    paused: bool = False
    cancel_at_period_end: bool = False

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        if self.paused and self.status not in ("active", "past_due"):
            raise ValueError(f"a {self.status} subscription cannot be paused")
        if self.cancel_at_period_end and self.status not in ("trialing", "active", "past_due"):
            raise ValueError(f"a {self.status} subscription cannot have a cancellation scheduled")


@dataclass(frozen=True, slots=True)
class Context:
    """The facts some transitions depend on.

    `at`: now. `period_end`: end of the current period (when a cancellation
    at period end takes effect). `commitment_ends_at`: None without a
    commitment. `forced`: the platform operator overrides the commitment.
    `card_needed`: at the end of a trial, something is due and the customer
    has no default card (the subscription becomes `incomplete`)."""

    at: datetime | None = None
    period_end: datetime | None = None
    commitment_ends_at: datetime | None = None
    forced: bool = False
    card_needed: bool = False


class Refused(Conflict):
    """409: the subscription's state does not allow the action. `reason` is a
    short code (tests and logs); the message says it to a person."""

    code = "invalid_state"

    def __init__(self, reason: str, message: str, *, code: str | None = None):
        super().__init__(message, code=code)
        self.reason = reason


_MESSAGES = {
    "canceled": "the subscription is canceled; create a new subscription instead",
    "incomplete": "the subscription has not started: its first invoice is unpaid; "
    "add a card for the customer, or cancel it immediately (at_period_end false)",
    "past_due": "an invoice of the subscription is unpaid; it can be changed or paused once it is paid",
    "trialing": "the subscription is in its trial: a trial cannot be paused or charged",
    "paused": "the subscription is paused; resume it first",
    "cancellation_scheduled": "a cancellation is already scheduled for the end of the period; "
    "reactivate the subscription first",
    "no_cancellation_scheduled": "no cancellation is scheduled: there is nothing to reactivate",
    "already_paused": "the subscription is already paused",
    "not_paused": "the subscription is not paused",
    "not_past_due": "no invoice of the subscription is overdue",
}


def _refuse(reason: str) -> Refused:
    return Refused(reason, _MESSAGES[reason])


def transition(state: State, action: str, context: Context = Context()) -> State:
    """The state after `action`, or Refused saying why not.

    The first reason that applies is given, in this order: canceled,
    incomplete, past_due, trialing, paused, the cancellation flag, then the
    commitment (e.g. changing a paused subscription with a cancellation
    scheduled is refused as `paused`)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    status = state.status
    if status == "canceled":
        if action in SYSTEM_ACTIONS:
            return state
        raise _refuse("canceled")
    return _TRANSITIONS[action](state, context)


def _change(state: State, context: Context) -> State:
    if state.status in ("incomplete", "past_due"):
        raise _refuse(state.status)
    if state.paused:
        raise _refuse("paused")
    if state.cancel_at_period_end:
        raise _refuse("cancellation_scheduled")
    return state


def _cancel_now(state: State, context: Context) -> State:
    _check_commitment(state, context, context.at)
    return State("canceled")


def _cancel_at_period_end(state: State, context: Context) -> State:
    if state.status == "incomplete":
        raise _refuse("incomplete")
    if state.cancel_at_period_end:
        raise _refuse("cancellation_scheduled")
    _check_commitment(state, context, context.period_end)
    return replace(state, cancel_at_period_end=True)


def _reactivate(state: State, context: Context) -> State:
    if not state.cancel_at_period_end:
        raise _refuse("no_cancellation_scheduled")
    return replace(state, cancel_at_period_end=False)


def _pause(state: State, context: Context) -> State:
    if state.status in ("incomplete", "past_due", "trialing"):
        raise _refuse(state.status)
    if state.paused:
        raise _refuse("already_paused")
    return replace(state, paused=True)


def _resume(state: State, context: Context) -> State:
    if not state.paused:
        raise _refuse("not_paused")
    return replace(state, paused=False)


def _payment_succeeded(state: State, context: Context) -> State:
    if state.status == "trialing":
        raise _refuse("trialing")
    return replace(state, status="active")


def _payment_failed(state: State, context: Context) -> State:
    if state.status == "trialing":
        raise _refuse("trialing")
    if state.status == "incomplete":
        return state  # the first invoice: still waiting for a card that works
    return replace(state, status="past_due")


def _period_ended(state: State, context: Context) -> State:
    if state.cancel_at_period_end:
        return State("canceled")
    if state.status == "trialing":
        return State("incomplete" if context.card_needed else "active")
    return state


def _payment_exhausted(state: State, context: Context) -> State:
    if state.status not in ("past_due", "incomplete"):
        raise _refuse("not_past_due")
    return State("canceled")


def _check_commitment(state: State, context: Context, effective: datetime | None) -> None:
    # A trial or a subscription never paid for has not started its commitment.
    if state.status in ("trialing", "incomplete") or context.forced or context.commitment_ends_at is None:
        return
    if effective is None:
        raise ValueError("a cancellation needs the instant it takes effect")
    if effective < context.commitment_ends_at:
        raise Refused(
            "commitment",
            f"the subscription is committed until {_iso(context.commitment_ends_at)}; a cancellation taking effect "
            f"at {_iso(effective)} is before that and needs the platform operator",
            code="commitment_active",
        )


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


_TRANSITIONS = {
    "change": _change,
    "cancel_now": _cancel_now,
    "cancel_at_period_end": _cancel_at_period_end,
    "reactivate": _reactivate,
    "pause": _pause,
    "resume": _resume,
    "payment_succeeded": _payment_succeeded,
    "payment_failed": _payment_failed,
    "period_ended": _period_ended,
    "payment_exhausted": _payment_exhausted,
}


# ---------------------------------------------------------------------------
# What the next period runs on


@dataclass(frozen=True, slots=True)
class Plan:
    """The terms a subscription chose: an offer, its options and price overrides."""

    offer_id: str
    options: tuple[str, ...] = ()
    price_overrides: Mapping | None = None


@dataclass(frozen=True, slots=True)
class Phase:
    """From the period of index `after_periods` on (0 is the first paid
    period), the subscription runs on `offer_id`, with its own options and
    overrides when given, else with the subscription's."""

    after_periods: int
    offer_id: str
    options: tuple[str, ...] | None = None
    price_overrides: Mapping | None = None


def next_plan(
    current: Plan, pending_change: Plan | None, phases: Sequence[Phase], next_index: int
) -> tuple[Plan, tuple[Phase, ...]]:
    """The plan of the period of index `next_index` and the phases still to come.

    A change scheduled for the period end applies first; then the last phase
    whose `after_periods` is reached (phases are kept sorted and are consumed
    when they apply, so a boundary billed late still lands on the right one).
    A phase without options or overrides of its own keeps the plan's."""
    plan = pending_change or current
    due = [phase for phase in phases if phase.after_periods <= next_index]
    remaining = tuple(phase for phase in phases if phase.after_periods > next_index)
    if due:
        phase = max(due, key=lambda p: p.after_periods)
        plan = Plan(
            phase.offer_id,
            plan.options if phase.options is None else tuple(phase.options),
            plan.price_overrides if phase.price_overrides is None else phase.price_overrides,
        )
    return plan, remaining
