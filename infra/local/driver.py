"""The local stage's stand-in for Lambda's event sources.

In AWS, SQS event source mappings call the queue consumers and EventBridge
rules call the scheduled jobs. Here one process polls moto's queues and calls
the same Chalice handlers with the same event shapes, honouring partial batch
failures (ReportBatchItemFailures) as Lambda does.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from infra.local.lambda_events import drain_once, queue_consumers
from infra.local.streams import TableStream, stream_consumers


def main() -> int:
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    from app import app

    consumers = queue_consumers(app)
    print(f"driver: consuming {sorted(consumers)}", flush=True)
    # The billing table's stream (the reports' feed), as Lambda reads it.
    tables = {"BillingTable": os.environ["TABLE_NAME"]}
    streams = [(TableStream(tables[table]), handler) for table, handler in stream_consumers(app).items()]
    # IoT Core's stand-in: devices publish here, the bridge feeds UsageQueue.
    from infra.local.mqtt import start_mqtt

    broker, bridge = start_mqtt(
        int(os.environ.get("MQTT_PORT", "1883")),
        os.environ["USAGE_QUEUE_URL"],
        os.environ.get("USAGE_DEAD_LETTER_QUEUE_URL"),
    )
    print(f"driver: MQTT broker on 127.0.0.1:{broker.port}, topic billing/+/+/counters -> UsageQueue", flush=True)
    try:
        while not stopping:
            handled = sum(drain_once(queue_url, handler, wait_seconds=1) for queue_url, handler in consumers.items())
            handled += sum(stream.deliver(handler) for stream, handler in streams)
            if not handled and not consumers:
                time.sleep(0.5)
    finally:
        bridge.stop()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
