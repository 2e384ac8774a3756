"""Rating throughput: subscription-periods rated per second on one core.

One subscription-period is what a boundary invoice rates: the closed
period's usage (in arrears) and the opening period's fees (in advance),
through the public `rate_period` with the offer and the subscription's
price_overrides (the price book is compiled once and then served from its
cache, as in a warm billing worker). The offer is realistic: a flat base,
one option, a graduated tiered meter with included units, a per-unit meter
with an override, time and materials, and a bonus/malus.

Run: `python -m tests.bench.bench_rating` (or `python tests/bench/bench_rating.py`).
Prints one JSON line: {"benchmark": "rating", "periods_per_s": median, "runs": [...]}
(periods per second of CPU time on one core, median of RUNS runs).
Not collected by pytest (no test_ prefix).
"""
from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from chalicelib.domain.catalog import parse_offer  # noqa: E402
from chalicelib.domain.periods import Interval, period_bounds  # noqa: E402
from chalicelib.domain.rating import MeterUsage, rate_period  # noqa: E402

TARGET_PER_S = 50_000
RUNS = 5
PERIODS_PER_RUN = 20_000

OFFER = {
    "code": "clico-neksia",
    "name": "Clic&O Neksia",
    "currency": "EUR",
    "billing_interval": "month",
    "components": [
        {"code": "base", "type": "flat", "amount": "49.00"},
        {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"},
        {
            "code": "calls",
            "type": "metered",
            "meter": "calls",
            "tier_mode": "graduated",
            "included_units": "100",
            "tiers": [
                {"up_to": "1000", "unit_amount": "0.50"},
                {"up_to": "5000", "unit_amount": "0.40", "flat_amount": "10.00"},
                {"up_to": None, "unit_amount": "0.30"},
            ],
        },
        {
            "code": "support",
            "type": "time_and_materials",
            "hours_meter": "agent_hours",
            "hourly_rate": "38.00",
            "materials_meter": "parts_cost",
            "markup_percent": "15",
        },
        {
            "code": "quality",
            "type": "bonus_malus",
            "kpi_meter": "service_level",
            "target": "0.90",
            "bonus_percent": "5",
            "malus_percent": "10",
            "applies_to": ["calls", "montage"],
        },
    ],
    "options": [{"code": "express", "name": "4h on-site", "amount": "30.00", "entitlements": ["4h_response"]}],
}
OVERRIDES = {"montage": {"unit_amount": "1.05"}}
OPTIONS = ["express"]


def workload(n: int):
    """n (usage, closed period, opening period) triples with varied quantities."""
    anchor = datetime(2026, 1, 31, tzinfo=timezone.utc)
    interval = Interval("month")
    periods = [period_bounds(anchor, interval, k, "Europe/Paris") for k in range(13)]
    items = []
    for i in range(n):
        usage = {
            "montages": MeterUsage(Decimal(300 + i % 250), Decimal(40), Decimal(12)),
            "calls": MeterUsage(Decimal(900 + (i * 37) % 6000), Decimal(90), Decimal(3)),
            "agent_hours": MeterUsage(Decimal("7.5") + i % 5, None, None),
            "parts_cost": MeterUsage(Decimal("230.40"), None, None),
            "service_level": MeterUsage(Decimal("27.1"), Decimal("0.97"), Decimal("0.93") if i % 3 else Decimal("0.85")),
        }
        items.append((usage, periods[i % 12], periods[i % 12 + 1]))
    return items


def run_once(offer, items) -> float:
    """Periods per second of this thread's CPU time: what one core does,
    whatever else the machine runs (wall time would count waiting for it)."""
    started = time.thread_time()
    for usage, closed, opening in items:
        rate_period(offer, OPTIONS, OVERRIDES, usage, closed, opening)
    return len(items) / (time.thread_time() - started)


def main() -> dict:
    offer = parse_offer(OFFER)
    items = workload(PERIODS_PER_RUN)
    run_once(offer, items[:1000])  # warm up: compile the price book, fill caches
    runs = sorted(round(run_once(offer, items)) for _ in range(RUNS))
    result = {
        "benchmark": "rating",
        "periods_per_s": runs[len(runs) // 2],
        "runs": runs,
        "target_per_s": TARGET_PER_S,
        "lines_per_period": len(rate_period(offer, OPTIONS, OVERRIDES, *items[0])),
        "python": sys.version.split()[0],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
