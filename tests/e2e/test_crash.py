"""Crashes during a billing run on a stage of the module's own
(`make crash` runs the same at 2,000 subscriptions, tests/load/crash.py):
the driver killed twice, AWS's stand-in restarted, Stripe frozen. After
each, one invoice per subscription and boundary, gapless numbers, and one
charge at localstripe per invoice."""
from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import ROOT
from tests.load import population as pop
from tests.load.crash import CrashBench, problems_of

SUBSCRIPTIONS = 40


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    with pop.OwnStage(tmp_path_factory.mktemp("crash") / "stage", keep_aws_state=True) as own:
        yield CrashBench(own, SUBSCRIPTIONS)


def record(figures: dict) -> None:
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / f"crash-{figures['fault']}.json").write_text(json.dumps(figures, indent=1, sort_keys=True))


@pytest.mark.timeout(240)
def test_the_driver_killed_twice_in_a_billing_run(bench):
    figures = bench.billing_run("driver")
    record(figures)
    assert problems_of(figures) == [], json.dumps(figures, indent=1) + bench.own.stage.state_dir.name
    # Killed mid-run: work was left to come back (in flight), and after.
    assert all(0 < kill["waiting"] < SUBSCRIPTIONS for kill in figures["kills"])
    check = figures["check"]
    assert check["invoices"] == 2 * SUBSCRIPTIONS and check["double_charges"] == 0
    assert check["number_gaps"] == check["number_repeats"] == 0


@pytest.mark.timeout(240)
def test_aws_restarted_in_a_billing_run_keeps_its_state(bench):
    figures = bench.billing_run("moto")
    record(figures)
    assert problems_of(figures) == [], json.dumps(figures, indent=1)
    assert figures["check"]["invoices"] == 3 * SUBSCRIPTIONS
    # Counters published across the restart: none lost, none counted twice.
    assert figures["usage"]["lost"] == figures["usage"]["double_counted"] == {}
    assert figures["usage"]["expected"]["montages"] > 0


@pytest.mark.timeout(300)
def test_stripe_frozen_in_a_billing_run_charges_once_later(bench):
    figures = bench.billing_run("stripe", outage=30)
    record(figures)
    assert problems_of(figures) == [], json.dumps(figures, indent=1)
    assert figures["check"]["invoices"] == 4 * SUBSCRIPTIONS
    assert figures["check"]["succeeded_payment_intents"] == 4 * SUBSCRIPTIONS
