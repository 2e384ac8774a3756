"""Simulated lab machines publishing their counters to the local stage's broker.

    python -m infra.local.simulator --devices 5 --merchant mer_...
    make simulate MERCHANT=mer_... DEVICES=5

Each machine (`neksia-0001`, `neksia-0002` ...) reports once a "day" its
running totals since installation, as an edging machine of Clic&O would:
`montages` (billed per operation) and `tracings` (frame tracing, recorded but
billed by no component). Readings are stamped from `--start` (default:
`--readings` days before now) one `--step-minutes` apart, so that the last
is now. Two things real fleets do are included on purpose: the first
machine's counters are reset half-way (a board replaced), and one message
is published twice (a retry after a lost acknowledgement).

Attach the machines first (`POST /devices`) or their messages land in the
usage dead-letter queue, which is the point of the dead-letter queue.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
from datetime import datetime, timedelta, timezone


def readings(device_index: int, count: int, start: datetime, step: timedelta, rng: random.Random,
             reset_at: int | None) -> list[dict]:
    """One machine's messages: seq, ts, counters (running totals)."""
    montages = rng.randint(10_000, 20_000)
    tracings = rng.randint(100, 500)
    seq = rng.randint(1, 1_000)
    messages = []
    for k in range(count):
        if k:
            montages += rng.randint(0, 60)
            tracings += rng.randint(0, 8)
        if reset_at is not None and k == reset_at:
            montages, tracings = rng.randint(0, 20), rng.randint(0, 3)
        messages.append(
            {
                "seq": seq + k,
                "ts": (start + k * step).isoformat().replace("+00:00", "Z"),
                "counters": {"montages": montages, "tracings": tracings},
            }
        )
    return messages


def plan(devices: int, count: int, start: datetime, step: timedelta, seed: int) -> list[tuple[str, dict]]:
    """(device id, message) in publishing order: time by time, machine by
    machine, with the first machine's reset and one message published twice."""
    rng = random.Random(seed)
    per_device = {
        f"neksia-{i + 1:04d}": readings(i, count, start, step, rng, reset_at=count // 2 if i == 0 and count > 2 else None)
        for i in range(devices)
    }
    ordered = [(device, per_device[device][k]) for k in range(count) for device in per_device]
    if ordered:
        ordered.insert(len(ordered) // 2 + 1, ordered[len(ordered) // 2])  # the duplicate
    return ordered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--merchant", required=True, help="the merchant id (mer_...) whose topic the machines use")
    parser.add_argument("--readings", type=int, default=10, help="readings per machine")
    parser.add_argument("--step-minutes", type=int, default=24 * 60)
    parser.add_argument("--start", help="time of the first reading (ISO 8601, Z); default: so the last one is now")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MQTT_PORT", os.environ.get("LOCAL_MQTT_PORT", "1883"))))
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    import paho.mqtt.client as mqtt

    step = timedelta(minutes=args.step_minutes)
    if args.start:
        start = datetime.fromisoformat(args.start).astimezone(timezone.utc)
    else:
        start = datetime.now(timezone.utc).replace(microsecond=0) - (args.readings - 1) * step
    messages = plan(args.devices, args.readings, start, step, args.seed)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"simulator-{os.getpid()}")
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    try:
        for device, message in messages:
            topic = f"billing/{args.merchant}/{device}/counters"
            info = client.publish(topic, json.dumps(message), qos=1)
            info.wait_for_publish(timeout=10)
            if not info.is_published():
                print(f"not acknowledged: {topic} seq {message['seq']}", file=sys.stderr)
                return 1
    finally:
        client.disconnect()
        client.loop_stop()
    print(f"published {len(messages)} messages for {args.devices} machine(s) of {args.merchant} "
          f"on {args.host}:{args.port}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
