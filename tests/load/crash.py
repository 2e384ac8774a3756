"""Crashes during a billing run on the local stage, and what they leave.

    make crash                                  (CRASH_SUBSCRIPTIONS=2000)
    python -m tests.load.crash --subscriptions 2000 [--settle] [--output FILE]

A stage of its own (moto keeping its state across a restart of its process,
infra/local/moto_state.py) and a merchant with `--subscriptions`
subscriptions (customers with a card saved on the payment page, 20
subscriptions each; their first invoices charged). Then one billing run per
fault, each at the next month boundary: the stage's clock is moved past it
with the jobs enqueueing their work, as EventBridge's rules do, so the
driver's billing workers bill and charge, and during the run:

1. `driver`: the driver (every queue consumer) is killed with SIGKILL at 30%
   and at 60% of the run, and started again at once;
2. `moto`: AWS's stand-in is restarted half-way (SIGTERM: it saves its
   state, and loads it again when started), while machines publish counters
   across the restart;
3. `stripe`: localstripe is frozen (SIGSTOP) for `--outage` seconds at 30%
   of the run, then thawed (SIGCONT): the charges it was sent meanwhile are
   made when it wakes up, after the workers gave up on them.

After the fault the run is left to finish; then the clock moves an hour on
(the inline catch-up: the next billing and dunning runs, which resume what
a dead worker left leased), and `population.check_billing` checks: one
invoice per subscription and boundary, the numbers of the merchant gapless
and unrepeated, every invoice paid by exactly one succeeded PaymentIntent at
localstripe, of its amount. `--settle` also waits until the messages a dead
worker had taken come back from the queue (its visibility timeout, 360 s)
and are handled, and checks again.

Prints the figures as JSON (and writes them to `--output`); exits 1 when a
check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

from tests.load import population as pop
from tests.load.fleet import Machine

FAULTS = ("driver", "moto", "stripe")


class CrashBench:
    """The stage, its merchant and subscriptions, and the billing runs so far."""

    def __init__(self, own: pop.OwnStage, subscriptions: int, devices: int = 5):
        self.own = own
        self.operator = pop.Api(own.api_base, pop.ADMIN_KEY, patience=300)
        self.merchant, record = pop.create_merchant(self.operator, "Crash Test", "CR")
        self.merchant_id = record["id"]
        started = time.monotonic()
        _, self.subscriptions = pop.populate(self.merchant, own.stripe_base, subscriptions, per_customer=20)
        self.ids = [s["id"] for s in self.subscriptions]
        rng = random.Random(11)
        # No counter resets: the readings a consumer held when AWS stopped come
        # back after the queue's visibility timeout, behind newer ones, and a
        # late reading is ignored for usage (API.md). With running totals that
        # loses nothing, unless a reset lies between: what the late reading
        # held is then gone, by the contract's rule, not by a crash.
        self.machines = [Machine(f"crash-{n + 1:03d}", self.ids[n % len(self.ids)], random.Random(rng.random()),
                                 reset_rate=0) for n in range(devices)]
        for machine in self.machines:
            self.merchant.post("/devices", {"device_id": machine.device_id, "subscription_id": machine.subscription_id},
                               idempotency_key=f"device-{machine.device_id}")
        self.setup_seconds = round(time.monotonic() - started, 1)
        self.invoices_each = 1
        self.sqs = own.sqs()

    def billing_queue(self) -> tuple[int, int]:
        return pop.queue_depth(self.sqs, "BillingQueue")

    def wait_for_progress(self, total: int, fraction: float, timeout: float = 3600) -> int:
        """Wait until `fraction` of the run's messages left the queue;
        returns how many are still waiting."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            visible, _ = self.billing_queue()
            if visible <= total * (1 - fraction):
                return visible
            time.sleep(0.1)
        raise TimeoutError(f"the billing run did not reach {fraction:.0%}")

    def wait_until_quiet(self, timeout: float = 3600) -> None:
        """Wait until no message waits on the billing queue and those in
        flight stopped changing for 10 s (what is left is held by a worker
        that died)."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            depth = self.billing_queue()
            if depth != last:
                last, since = depth, time.monotonic()
            elif depth[0] == 0 and time.monotonic() - since >= 10:
                return
            time.sleep(0.5)

    def billing_run(self, fault: str, outage: float = 30) -> dict:
        """Bill the next boundary through the driver with `fault` in the
        middle; catch up; check."""
        ours = set(self.ids)
        periods = [s["current_period_end"] for s in self.merchant.every("/subscriptions") if s["id"] in ours]
        run_at = max(pop.instant(end) for end in periods) + timedelta(minutes=1)
        started = time.monotonic()
        moved = pop.move_clock(self.operator, run_at, inline=False)
        enqueued = {job["name"]: job["result"] for job in moved["jobs"]}["billing_scheduler"]["enqueued"]
        figures: dict = {"fault": fault, "subscriptions": len(self.ids), "enqueued": enqueued}
        if fault == "driver":
            figures["kills"] = []
            for fraction in (0.3, 0.6):
                waiting = self.wait_for_progress(enqueued, fraction)
                _, in_flight = self.billing_queue()
                self.own.stage.restart("driver", signal.SIGKILL)
                figures["kills"].append({"at": f"{fraction:.0%}", "waiting": waiting, "in_flight": in_flight})
        elif fault == "moto":
            self.wait_for_progress(enqueued, 0.5)
            publishing = threading.Thread(target=self.publish_readings, args=(12, 0.5), daemon=True)
            publishing.start()
            time.sleep(2)
            down = time.monotonic()
            self.own.stage.restart("moto", signal.SIGTERM)
            figures["aws_down_seconds"] = round(time.monotonic() - down, 1)
            publishing.join()
        elif fault == "stripe":
            self.wait_for_progress(enqueued, 0.3)
            stripe = self.own.stage.process("localstripe")
            os.killpg(stripe.pid, signal.SIGSTOP)
            try:
                time.sleep(outage)
            finally:
                os.killpg(stripe.pid, signal.SIGCONT)
            figures["stripe_frozen_seconds"] = outage
        self.wait_until_quiet()
        figures["run_seconds"] = round(time.monotonic() - started, 1)
        left = self.billing_queue()
        caught_up = time.monotonic()
        catch_up = pop.move_clock(self.operator, run_at + timedelta(minutes=61))
        jobs = {job["name"]: job["result"] for job in catch_up["jobs"]}
        figures["catch_up"] = {
            "seconds": round(time.monotonic() - caught_up, 1), "left_on_queue": {"visible": left[0], "in_flight": left[1]},
            "billed": sum(1 for p in jobs.get("billing_scheduler", {}).get("processed", []) if "error" not in p),
            "collected": sum(1 for p in jobs.get("dunning_scheduler", {}).get("processed", []) if "error" not in p),
        }
        self.invoices_each += 1
        figures["check"] = self.check()
        if fault == "moto":
            figures["usage"] = self.check_usage()
        return figures

    def check(self, patience: float = 120) -> dict:
        """check_billing, again for up to `patience` seconds while invoices
        are still being paid (a webhook, a worker finishing)."""
        deadline = time.monotonic() + patience
        while True:
            result = pop.check_billing(self.merchant, self.merchant_id, self.own.stripe_base, self.ids,
                                       self.invoices_each)
            if not result["problems"] or time.monotonic() > deadline:
                return result
            time.sleep(3)

    def publish_readings(self, count: int, pause: float) -> None:
        """The machines publish `count` readings each, `pause` s apart."""
        from tests.load.run import Publishers, StageClock

        publishers = Publishers(self.own.mqtt_port, 1)
        stage_clock = StageClock(self.operator)
        try:
            for _ in range(count):
                for machine in self.machines:
                    for message in machine.tick(stage_clock.now()):
                        publishers.publish(0, f"billing/{self.merchant_id}/{machine.device_id}/counters", message)
                time.sleep(pause)
            for machine in self.machines:
                for message in machine.flush():
                    publishers.publish(0, f"billing/{self.merchant_id}/{machine.device_id}/counters", message)
            publishers.wait()
        finally:
            publishers.close()

    def check_usage(self) -> dict:
        from tests.load.run import StageClock, check_usage, wait_until_ingested

        _, behind = wait_until_ingested(self.merchant, self.machines, 120)
        mine = {m.subscription_id for m in self.machines}
        result = check_usage(self.merchant, [s for s in self.subscriptions if s["id"] in mine], self.machines,
                             {}, StageClock(self.operator).now())
        result["devices_behind"] = behind
        return result

    def settle(self, timeout: float = 900) -> dict:
        """Wait until every queue is empty (the messages a dead worker held
        come back after the visibility timeout and are handled), then check."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.billing_queue() != (0, 0):
            time.sleep(2)
        return {"queue": list(self.billing_queue()), "check": self.check()}


def problems_of(figures: dict) -> list[str]:
    problems = list(figures["check"]["problems"])
    usage = figures.get("usage")
    if usage and (usage["lost"] or usage["double_counted"] or usage["devices_behind"]):
        problems.append(f"usage lost {usage['lost']}, counted twice {usage['double_counted']}, "
                        f"devices behind {usage['devices_behind']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    from tests.load.run import print_figures

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscriptions", type=int, default=int(os.environ.get("CRASH_SUBSCRIPTIONS", 2000)))
    parser.add_argument("--faults", default=",".join(FAULTS), help="which, in order: " + ", ".join(FAULTS))
    parser.add_argument("--outage", type=float, default=30, help="seconds localstripe stays frozen")
    parser.add_argument("--settle", action="store_true", help="at the end, wait for the messages dead workers held")
    parser.add_argument("--output", help="write the figures here too (JSON)")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[2]
    started = time.monotonic()
    report: dict = {"subscriptions": args.subscriptions, "runs": []}
    with pop.OwnStage(root / "test-artifacts" / "crash-stage", keep_aws_state=True) as own:
        bench = CrashBench(own, args.subscriptions)
        report["setup_seconds"] = bench.setup_seconds
        for fault in args.faults.split(","):
            figures = bench.billing_run(fault, args.outage)
            figures["problems"] = problems_of(figures)
            report["runs"].append(figures)
            print(json.dumps(figures, sort_keys=True), flush=True)
        if args.settle:
            report["settled"] = bench.settle()
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    report["problems"] = [p for run in report["runs"] for p in run["problems"]]
    if "settled" in report:
        report["problems"] += report["settled"]["check"]["problems"]
    return print_figures(report, args.output)


if __name__ == "__main__":
    sys.exit(main())
