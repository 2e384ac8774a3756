"""The local stage's stand-in for Lambda's event sources.

In AWS, SQS event source mappings call the queue consumers and EventBridge
rules call the scheduled jobs. Here one process polls moto's queues and calls
the same Chalice handlers with the same event shapes, honouring partial batch
failures (ReportBatchItemFailures) as Lambda does.

Each event source has its own poller thread, as each event source mapping
has its own pollers in AWS: a long poll on an empty queue (up to a second)
never holds back the messages of another, and a poll that fails (AWS
unreachable for a moment) is logged and tried again after a pause instead of
ending the driver.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

from infra.local.lambda_events import drain_once, queue_consumers
from infra.local.streams import TableStream, stream_consumers


def poll(name: str, once: Callable[[], int], stopping: threading.Event, idle_seconds: float = 0.0) -> None:
    """Call `once` (one poll of an event source, returning how many records it
    handed over) until `stopping`; pause `idle_seconds` after an empty poll,
    and longer and longer (up to 5 s) after failing ones."""
    failures = 0
    while not stopping.is_set():
        try:
            handled = once()
        except Exception as error:  # one failed poll: the source is polled again, as Lambda's pollers do
            failures += 1
            print(f"driver: polling {name} failed ({type(error).__name__}: {error}); again shortly", flush=True)
            stopping.wait(min(5.0, 0.2 * 2 ** failures))
            continue
        failures = 0
        if not handled and idle_seconds:
            stopping.wait(idle_seconds)


def main() -> int:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    from app import app

    consumers = queue_consumers(app)
    print(f"driver: consuming {sorted(consumers)}", flush=True)
    # The billing table's stream (the reports' feed), as Lambda reads it.
    tables = {"BillingTable": os.environ["TABLE_NAME"]}
    streams = [(TableStream(tables[table]), handler) for table, handler in stream_consumers(app)]
    # IoT Core's stand-in: devices publish here, the bridge feeds UsageQueue.
    from infra.local.mqtt import start_mqtt

    broker, bridge = start_mqtt(
        int(os.environ.get("MQTT_PORT", "1883")),
        os.environ["USAGE_QUEUE_URL"],
        os.environ.get("USAGE_DEAD_LETTER_QUEUE_URL"),
    )
    print(f"driver: MQTT broker on 127.0.0.1:{broker.port}, topic billing/+/+/counters -> UsageQueue", flush=True)
    pollers = [
        threading.Thread(target=poll, name=f"poll-{queue_url.rsplit('/', 1)[-1]}", daemon=True,
                         args=(queue_url, lambda q=queue_url, h=handler: drain_once(q, h, wait_seconds=1), stopping))
        for queue_url, handler in consumers.items()
    ]
    pollers += [
        threading.Thread(target=poll, name=f"poll-stream-{n}", daemon=True,
                         args=(stream.arn, lambda s=stream, h=handler: s.deliver(h), stopping, 0.5))
        for n, (stream, handler) in enumerate(streams)
    ]
    for poller in pollers:
        poller.start()
    try:
        while not stopping.is_set():
            stopping.wait(0.5)
    finally:
        for poller in pollers:
            poller.join(timeout=10)
        bridge.stop()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
