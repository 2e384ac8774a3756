"""The local stage's stand-in for AWS IoT Core: an MQTT broker and the topic rule.

In AWS, devices publish to IoT Core on `billing/{merchant_id}/{device_id}/counters`
and the topic rule `UsageTopicRule` (infra/aws/resources.yaml,
`SELECT seq, ts, counters, topic(2) AS merchant_id, topic(3) AS device_id`) sends each
message to the usage queue. Here an embedded broker (amqtt, in a thread with
its own event loop) listens on 127.0.0.1, and a bridge subscribed to
`billing/+/+/counters` applies the same rule and sends to the same queue, so
the driver's consumer feeds the same handler as in AWS.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from decimal import Decimal

import boto3

TOPIC_FILTER = "billing/+/+/counters"
# What the topic rule selects of a payload (infra/aws/resources.yaml).
RULE_FIELDS = ("seq", "ts", "counters")

logger = logging.getLogger("infra.local.mqtt")


class LocalBroker:
    """An amqtt broker on host:port, in a daemon thread running its own
    event loop (the broker must be created inside the loop it runs on)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 15) -> "LocalBroker":
        self._thread = threading.Thread(target=self._run, name="mqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the MQTT broker did not start on {self.host}:{self.port}")
        if self._error is not None:
            raise RuntimeError(f"the MQTT broker failed to start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as error:  # reported to start() through _error
            self._error = error
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        from amqtt.broker import Broker

        self._stop = asyncio.Event()
        broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
        )
        await broker.start()
        self._ready.set()
        await self._stop.wait()
        await broker.shutdown()

    def stop(self, timeout: float = 5) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)


def rule_output(topic: str, payload: bytes) -> str | None:
    """What the topic rule sends to the queue for a message on `topic`, or
    None when the topic is not a counters topic.

    Of a JSON object payload the rule keeps `seq`, `ts` and `counters` (those
    present) and adds `merchant_id` and `device_id` from the topic, so a
    payload naming another merchant or device is never read. Decimal
    numbers stay exactly as the device wrote them (sent as decimal strings,
    which the handler reads as it reads numbers). Any other payload is passed
    as it is: the handler parks it in the dead-letter queue, saying why."""
    levels = topic.split("/")
    if len(levels) != 4 or levels[0] != "billing" or levels[3] != "counters":
        return None
    text = payload.decode("utf-8", errors="replace")
    try:
        message = json.loads(text, parse_float=Decimal)
    except ValueError:
        return text
    if not isinstance(message, dict):
        return text
    selected = {field: message[field] for field in RULE_FIELDS if field in message}
    return json.dumps({**selected, "merchant_id": levels[1], "device_id": levels[2]}, default=str)


class CountersBridge:
    """Subscribes to the counters topics and sends each message, through
    `rule_output`, to the usage queue; a message the queue refuses goes to
    the dead-letter queue (the rule's error action).

    Messages are handed from the MQTT thread to a sender thread, which sends
    them in order, ten a request, and keeps trying while the queue cannot be
    reached (AWS restarting): a message is never dropped for want of a queue,
    and a slow queue never stalls the MQTT connection. `stop` sends what is
    left before it returns."""

    def __init__(self, host: str, port: int, queue_url: str, dead_letter_queue_url: str | None = None):
        import queue

        import paho.mqtt.client as mqtt

        self.queue_url = queue_url
        self.dead_letter_queue_url = dead_letter_queue_url
        self._sqs = boto3.client("sqs")
        self.forwarded = 0
        self._pending: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._sender = threading.Thread(target=self._send_pending, name="mqtt-bridge-sender", daemon=True)
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="local-iot-rule")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.host, self.port = host, port

    def start(self, timeout: float = 15) -> "CountersBridge":
        self._sender.start()
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError("the MQTT bridge could not subscribe to the counters topics")
        return self

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        # (Re)subscribe on every connection: a broker restart loses subscriptions.
        client.subscribe(TOPIC_FILTER, qos=1)

    def _on_message(self, client, userdata, message) -> None:
        body = rule_output(message.topic, message.payload)
        if body is not None:
            self._pending.put(body)

    def _send_pending(self) -> None:
        import queue

        while not (self._stopping.is_set() and self._pending.empty()):
            try:
                batch = [self._pending.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < 10:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            self._send(batch)

    def _send(self, bodies: list[str]) -> None:
        """Send `bodies` to the usage queue, trying again (after a pause that
        grows to 5 s) for as long as the queue cannot be reached; an entry
        SQS refuses as the sender's fault is parked in the dead-letter queue."""
        entries = {str(i): body for i, body in enumerate(bodies)}
        pause = 0.1
        while entries:
            try:
                answer = self._sqs.send_message_batch(
                    QueueUrl=self.queue_url, Entries=[{"Id": i, "MessageBody": b} for i, b in entries.items()])
            except Exception as error:
                if pause == 0.1:  # once per outage, not once per try
                    logger.warning("the usage queue cannot be reached (%s); %d counters messages wait",
                                   type(error).__name__, len(entries) + self._pending.qsize())
                time.sleep(pause)
                pause = min(5.0, pause * 2)
                continue
            failed = {f["Id"]: f for f in answer.get("Failed", [])}
            self.forwarded += len(entries) - len(failed)
            refused = [entries[i] for i, f in failed.items() if f.get("SenderFault")]
            if refused:
                self._park(refused)
            entries = {i: entries[i] for i, f in failed.items() if not f.get("SenderFault")}
            if entries:
                time.sleep(pause)
                pause = min(5.0, pause * 2)

    def _park(self, bodies: list[str]) -> None:
        logger.error("the usage queue refused %d counters message(s); parking them", len(bodies))
        if not self.dead_letter_queue_url:
            return
        for body in bodies:
            try:
                self._sqs.send_message(QueueUrl=self.dead_letter_queue_url, MessageBody=body)
            except Exception:
                logger.exception("a refused counters message could not be parked")

    def stop(self, timeout: float = 10) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._stopping.set()
        self._sender.join(timeout)


def start_mqtt(port: int, queue_url: str, dead_letter_queue_url: str | None = None,
               host: str = "127.0.0.1") -> tuple[LocalBroker, CountersBridge]:
    """The broker and the bridge, started (the stage's driver runs them)."""
    broker = LocalBroker(host, port).start()
    try:
        bridge = CountersBridge(host, port, queue_url, dead_letter_queue_url).start()
    except Exception:
        broker.stop()
        raise
    return broker, bridge
