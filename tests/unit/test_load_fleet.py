"""The load run's fleet (tests/load/fleet.py): what its machines publish,
and the usage its own model of API.md's rules says must come of it, which
must be what the backend's rule (domain/counters.py) makes of the same
messages, whether they arrive one by one, in batches, or with the two
readings of every swap delivered in either order."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from chalicelib.domain.counters import CounterReading, DeviceCounters, apply_readings
from tests.load.fleet import Machine, expected_usage

UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)


def published(seed: int, ticks: int = 200) -> Machine:
    machine = Machine("neksia-1", "sub_1", random.Random(seed), duplicate_rate=0.1, swap_rate=0.1, reset_rate=0.05)
    for k in range(ticks):
        machine.tick(START + timedelta(seconds=30 * k))
    machine.flush()
    return machine


def domain_usage(messages: list[dict], batch: int = 1) -> dict[str, int]:
    state, totals = DeviceCounters(), {"montages": Decimal(0), "tracings": Decimal(0)}
    readings = [CounterReading(m["seq"], datetime.fromisoformat(m["ts"].replace("Z", "+00:00")),
                               {k: Decimal(v) for k, v in m["counters"].items()}) for m in messages]
    for start in range(0, len(readings), batch):
        update = apply_readings(state, readings[start:start + batch], lambda ts: START)
        state = update.state
        for meters in update.usage.values():
            for meter, tally in meters.items():
                totals[meter] += tally.total
    return {meter: int(total) for meter, total in totals.items()}


def test_the_fleet_publishes_duplicates_swaps_and_resets():
    machine = published(1)
    assert machine.counts["duplicates"] and machine.counts["swapped"] and machine.counts["resets"]
    seqs = [m["seq"] for m in machine.published]
    assert len(seqs) > len(set(seqs))  # duplicates
    assert any(b["seq"] < a["seq"] for a, b in zip(machine.published, machine.published[1:]))  # newest first
    values = [m["counters"]["montages"] for m in machine.published]
    assert any(b < a - 10 for a, b in zip(values, values[1:]))  # a reset
    assert machine.last_accepted_seq() == max(seqs)


def test_the_model_agrees_with_the_backend_rule_in_any_delivery():
    for seed in range(40):
        messages = published(seed).published
        want = expected_usage(messages)
        assert want == domain_usage(messages), seed
        assert want == domain_usage(messages, batch=10), seed
        # Every swap delivered oldest first instead (the pipeline reordering it).
        unswapped = list(messages)
        for i in range(len(unswapped) - 1):
            a, b = unswapped[i], unswapped[i + 1]
            if b["seq"] == a["seq"] - 1 and b["ts"] < a["ts"]:
                unswapped[i], unswapped[i + 1] = b, a
        assert want == domain_usage(unswapped), seed


def test_the_model_counts_by_api_md():
    at = [f"2026-11-01T00:00:0{k}.000Z" for k in range(6)]
    messages = [
        {"seq": 1, "ts": at[0], "counters": {"montages": 100}},           # baseline
        {"seq": 2, "ts": at[1], "counters": {"montages": 110}},           # +10
        {"seq": 2, "ts": at[1], "counters": {"montages": 110}},           # duplicate
        {"seq": 4, "ts": at[3], "counters": {"montages": 130}},           # +20
        {"seq": 3, "ts": at[2], "counters": {"montages": 120}},           # older: ignored
        {"seq": 5, "ts": at[4], "counters": {"montages": 4}},             # reset: +4
        {"seq": 6, "ts": at[5], "counters": {"montages": 9, "tracings": 3}},  # +5; tracings' baseline
    ]
    assert expected_usage(messages) == {"montages": 39, "tracings": 0}
