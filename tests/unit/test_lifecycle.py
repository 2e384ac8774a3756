"""The subscription state machine, every state against every action, and the
plan each next period runs on."""
from datetime import datetime, timedelta, timezone
from itertools import product

import pytest

from chalicelib.domain.errors import Conflict
from chalicelib.domain.lifecycle import (
    ACTIONS,
    MERCHANT_ACTIONS,
    STATUSES,
    SYSTEM_ACTIONS,
    Context,
    Phase,
    Plan,
    Refused,
    State,
    next_plan,
    transition,
)

NOW = datetime(2026, 11, 10, 9, 0, tzinfo=timezone.utc)
PERIOD_END = datetime(2026, 12, 1, tzinfo=timezone.utc)
FREE = Context(at=NOW, period_end=PERIOD_END)

# Short names: status letter + p (paused) + c (cancellation scheduled).
S = {
    "incomplete": State("incomplete"),
    "trialing": State("trialing"),
    "trialing+c": State("trialing", cancel_at_period_end=True),
    "active": State("active"),
    "active+c": State("active", cancel_at_period_end=True),
    "active+p": State("active", paused=True),
    "active+pc": State("active", paused=True, cancel_at_period_end=True),
    "past_due": State("past_due"),
    "past_due+c": State("past_due", cancel_at_period_end=True),
    "past_due+p": State("past_due", paused=True),
    "past_due+pc": State("past_due", paused=True, cancel_at_period_end=True),
    "canceled": State("canceled"),
}

# The specification: for each state and action without a commitment, the
# state reached (a key of S) or "!reason" for a refusal.
EXPECTED = {
    "incomplete": dict(change="!incomplete", cancel_now="canceled", cancel_at_period_end="!incomplete",
                       reactivate="!no_cancellation_scheduled", pause="!incomplete", resume="!not_paused",
                       payment_succeeded="active", payment_failed="incomplete", period_ended="incomplete",
                       payment_exhausted="canceled"),
    "trialing": dict(change="trialing", cancel_now="canceled", cancel_at_period_end="trialing+c",
                     reactivate="!no_cancellation_scheduled", pause="!trialing", resume="!not_paused",
                     payment_succeeded="!trialing", payment_failed="!trialing", period_ended="active",
                     payment_exhausted="!not_past_due"),
    "trialing+c": dict(change="!cancellation_scheduled", cancel_now="canceled",
                       cancel_at_period_end="!cancellation_scheduled", reactivate="trialing", pause="!trialing",
                       resume="!not_paused", payment_succeeded="!trialing", payment_failed="!trialing",
                       period_ended="canceled", payment_exhausted="!not_past_due"),
    "active": dict(change="active", cancel_now="canceled", cancel_at_period_end="active+c",
                   reactivate="!no_cancellation_scheduled", pause="active+p", resume="!not_paused",
                   payment_succeeded="active", payment_failed="past_due", period_ended="active",
                   payment_exhausted="!not_past_due"),
    "active+c": dict(change="!cancellation_scheduled", cancel_now="canceled",
                     cancel_at_period_end="!cancellation_scheduled", reactivate="active", pause="active+pc",
                     resume="!not_paused", payment_succeeded="active+c", payment_failed="past_due+c",
                     period_ended="canceled", payment_exhausted="!not_past_due"),
    "active+p": dict(change="!paused", cancel_now="canceled", cancel_at_period_end="active+pc",
                     reactivate="!no_cancellation_scheduled", pause="!already_paused", resume="active",
                     payment_succeeded="active+p", payment_failed="past_due+p", period_ended="active+p",
                     payment_exhausted="!not_past_due"),
    "active+pc": dict(change="!paused", cancel_now="canceled", cancel_at_period_end="!cancellation_scheduled",
                      reactivate="active+p", pause="!already_paused", resume="active+c",
                      payment_succeeded="active+pc", payment_failed="past_due+pc", period_ended="canceled",
                      payment_exhausted="!not_past_due"),
    "past_due": dict(change="!past_due", cancel_now="canceled", cancel_at_period_end="past_due+c",
                     reactivate="!no_cancellation_scheduled", pause="!past_due", resume="!not_paused",
                     payment_succeeded="active", payment_failed="past_due", period_ended="past_due",
                     payment_exhausted="canceled"),
    "past_due+c": dict(change="!past_due", cancel_now="canceled", cancel_at_period_end="!cancellation_scheduled",
                       reactivate="past_due", pause="!past_due", resume="!not_paused",
                       payment_succeeded="active+c", payment_failed="past_due+c", period_ended="canceled",
                       payment_exhausted="canceled"),
    "past_due+p": dict(change="!past_due", cancel_now="canceled", cancel_at_period_end="past_due+pc",
                       reactivate="!no_cancellation_scheduled", pause="!past_due", resume="past_due",
                       payment_succeeded="active+p", payment_failed="past_due+p", period_ended="past_due+p",
                       payment_exhausted="canceled"),
    "past_due+pc": dict(change="!past_due", cancel_now="canceled", cancel_at_period_end="!cancellation_scheduled",
                        reactivate="past_due+p", pause="!past_due", resume="past_due+c",
                        payment_succeeded="active+pc", payment_failed="past_due+pc", period_ended="canceled",
                        payment_exhausted="canceled"),
    "canceled": {**{action: "!canceled" for action in MERCHANT_ACTIONS},
                 **{action: "canceled" for action in SYSTEM_ACTIONS}},
}


def test_the_specification_covers_every_reachable_state_and_action():
    assert set(EXPECTED) == set(S)
    for name, row in EXPECTED.items():
        assert set(row) == set(ACTIONS), name


@pytest.mark.parametrize("status, paused, cancel", list(product(STATUSES, (False, True), (False, True))))
def test_only_reachable_states_can_be_built(status, paused, cancel):
    reachable = {(s.status, s.paused, s.cancel_at_period_end) for s in S.values()}
    if (status, paused, cancel) in reachable:
        assert State(status, paused, cancel) in set(S.values())
    else:
        with pytest.raises(ValueError):
            State(status, paused, cancel)


@pytest.mark.parametrize("name, action", [(name, action) for name in S for action in ACTIONS])
def test_every_state_against_every_action(name, action):
    expected = EXPECTED[name][action]
    if expected.startswith("!"):
        with pytest.raises(Refused) as refused:
            transition(S[name], action, FREE)
        assert refused.value.reason == expected[1:]
        assert refused.value.status == 409
        assert refused.value.code == "invalid_state"
        assert len(refused.value.message) > 20  # a sentence a person can act on
    else:
        assert transition(S[name], action, FREE) == S[expected]


def test_refusal_messages_say_why():
    with pytest.raises(Refused, match="canceled"):
        transition(S["canceled"], "pause", FREE)
    with pytest.raises(Refused, match="resume it first"):
        transition(S["active+p"], "change", FREE)
    with pytest.raises(Refused, match="already scheduled"):
        transition(S["active+c"], "cancel_at_period_end", FREE)
    with pytest.raises(Refused, match="unpaid"):
        transition(S["past_due"], "pause", FREE)


def test_a_refusal_is_a_conflict():
    assert issubclass(Refused, Conflict)


def test_unknown_action_is_a_programming_error():
    with pytest.raises(ValueError):
        transition(S["active"], "explode", FREE)


def test_trial_end_without_a_card_when_something_is_due_is_incomplete():
    assert transition(S["trialing"], "period_ended", Context(card_needed=True)) == S["incomplete"]
    # A scheduled cancellation wins over the trial's end.
    assert transition(S["trialing+c"], "period_ended", Context(card_needed=True)) == S["canceled"]


# ---------------------------------------------------------------------------
# Commitment

COMMITTED = NOW + timedelta(days=400)


@pytest.mark.parametrize("name", ["active", "active+p", "past_due", "past_due+p"])
@pytest.mark.parametrize("action", ["cancel_now", "cancel_at_period_end"])
def test_cancelling_before_the_commitment_ends_is_refused(name, action):
    context = Context(at=NOW, period_end=PERIOD_END, commitment_ends_at=COMMITTED)
    with pytest.raises(Refused) as refused:
        transition(S[name], action, context)
    assert refused.value.reason == "commitment"
    assert refused.value.code == "commitment_active"
    assert "committed until" in refused.value.message and "operator" in refused.value.message


@pytest.mark.parametrize("action", ["cancel_now", "cancel_at_period_end"])
def test_the_operator_forces_a_cancellation_before_the_commitment_ends(action):
    context = Context(at=NOW, period_end=PERIOD_END, commitment_ends_at=COMMITTED, forced=True)
    assert transition(S["active"], action, context).status in ("canceled", "active")


def test_at_period_end_the_commitment_counts_from_the_period_end():
    # Committed until the current period's end: cancelling at that end is
    # allowed, cancelling now is not.
    context = Context(at=NOW, period_end=PERIOD_END, commitment_ends_at=PERIOD_END)
    assert transition(S["active"], "cancel_at_period_end", context) == S["active+c"]
    with pytest.raises(Refused):
        transition(S["active"], "cancel_now", context)
    later = Context(at=PERIOD_END, period_end=PERIOD_END, commitment_ends_at=PERIOD_END)
    assert transition(S["active"], "cancel_now", later) == S["canceled"]


@pytest.mark.parametrize("name", ["trialing", "trialing+c", "incomplete"])
def test_a_trial_or_an_unpaid_start_is_not_bound_by_the_commitment(name):
    context = Context(at=NOW, period_end=PERIOD_END, commitment_ends_at=COMMITTED)
    assert transition(S[name], "cancel_now", context) == S["canceled"]


def test_system_actions_ignore_the_commitment():
    context = Context(at=NOW, period_end=PERIOD_END, commitment_ends_at=COMMITTED)
    assert transition(S["past_due"], "payment_exhausted", context) == S["canceled"]
    assert transition(S["active+c"], "period_ended", context) == S["canceled"]


# ---------------------------------------------------------------------------
# The plan of the next period

BASE = Plan("off_a", ("express",), {"base": {"amount": "40.00"}})


def test_without_changes_or_phases_the_plan_goes_on():
    assert next_plan(BASE, None, (), 5) == (BASE, ())


def test_a_phase_applies_from_its_period_with_the_subscriptions_choices():
    phases = (Phase(3, "off_b"), Phase(6, "off_c", options=()))
    assert next_plan(BASE, None, phases, 2) == (BASE, phases)
    plan, remaining = next_plan(BASE, None, phases, 3)
    assert plan == Plan("off_b", ("express",), {"base": {"amount": "40.00"}})
    assert remaining == (phases[1],)
    plan, remaining = next_plan(plan, None, remaining, 6)
    assert plan == Plan("off_c", (), {"base": {"amount": "40.00"}}) and remaining == ()


def test_a_late_boundary_lands_on_the_last_phase_reached():
    phases = (Phase(1, "off_b"), Phase(2, "off_c", price_overrides={"x": {"amount": "1"}}))
    plan, remaining = next_plan(BASE, None, phases, 4)
    assert plan == Plan("off_c", ("express",), {"x": {"amount": "1"}}) and remaining == ()


def test_a_scheduled_change_applies_then_a_phase_due_at_the_same_boundary():
    change = Plan("off_a", (), None)
    assert next_plan(BASE, change, (), 1) == (change, ())
    plan, _ = next_plan(BASE, change, (Phase(1, "off_b"),), 1)
    assert plan == Plan("off_b", (), None)
