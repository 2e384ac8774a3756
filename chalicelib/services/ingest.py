"""Ingesting device counters: SQS messages from the IoT rule -> usage.

The IoT rule (infra/aws/resources.yaml; the local stage's MQTT bridge does
the same) turns a device's message on `billing/{merchant_id}/{device_id}/counters`
into an SQS message whose body is the device's `seq`, `ts` and `counters`
with `merchant_id` and `device_id` taken from the TOPIC: a device can only
write where its certificate lets it publish, never name another merchant in
its payload.

A batch is ingested device by device:
1. every message is parsed; one that does not parse is a dead letter (with
   its reason), never retried;
2. the devices of the batch are read at once (BatchGetItem, eventually
   consistent: a stale read only costs a retry, the write is conditional);
   a message for a device that is not attached is a dead letter;
3. each device's readings are applied together (domain/counters.py) and
   written with ONE conditional write on the device's version
   (store/devices.save_readings). A lost race re-reads the device
   (consistently) and applies the readings again, a few times; a
   DynamoDB error fails only that device's messages, which SQS delivers
   again. No per-message idempotency record: the version condition and the
   readings' own seq and time make a redelivery change nothing.
"""
from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from chalicelib.domain.counters import CounterReading, CounterUpdate, apply_readings, settle
from chalicelib.domain.money import MAX_INTEGER_DIGITS, MAX_UNIT_DECIMALS
from chalicelib.domain.usage import parse_instant
from chalicelib.observability import logger
from chalicelib.store import devices as device_store

MERCHANT_ID = re.compile(r"^mer_[0-9a-z]{26}$")
# Device ids are MQTT topic levels: no '/', '+' or '#'.
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
METER = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_COUNTERS = 50
MAX_SEQ = 2**63 - 1
# A device clock ahead of ours by more than this is wrong: accepting such a
# reading would make every later, correct reading look late.
FUTURE_TOLERANCE = timedelta(hours=1)
# Lost races (concurrent batches of one device) retried before SQS's own retry.
WRITE_ATTEMPTS = 6


class PoisonMessage(Exception):
    """A message that will never be ingested as it is: it goes to the
    dead-letter queue with this reason instead of being retried."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    merchant_id: str
    device_id: str
    reading: CounterReading


@dataclass
class IngestReport:
    """What became of a batch, per message id: `failed` come back (transient),
    `dead_letters` are (message id, reason code, reason) to park with their body."""

    failed: set[str] = field(default_factory=set)
    dead_letters: list[tuple[str, str, str]] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    writes: int = 0

    def count(self, outcome: str, k: int = 1) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + k


def parse_message(body: str, ref: str | None = None) -> DeviceMessage:
    """The body the IoT rule sends, as a DeviceMessage; PoisonMessage saying
    what is wrong otherwise. Numbers are read as Decimal, never float.

    A body the dead-letter queue wrapped (`{"reason", "original"}`, see
    jobs.py) is unwrapped, so operations can move dead letters back to the
    queue once the cause is fixed (e.g. the device attached)."""
    try:
        data = json.loads(body, parse_float=Decimal)
    except (ValueError, TypeError):
        raise PoisonMessage("unparseable", "the message body is not JSON") from None
    if isinstance(data, dict) and set(data) >= {"reason", "original"} and isinstance(data["original"], str):
        return parse_message(data["original"], ref)
    if not isinstance(data, dict):
        raise PoisonMessage("invalid_message", "the message body is not a JSON object")
    merchant_id, device_id = data.get("merchant_id"), data.get("device_id")
    if not isinstance(merchant_id, str) or not MERCHANT_ID.match(merchant_id):
        raise PoisonMessage("invalid_message", "merchant_id: not a merchant id (it comes from the topic)")
    if not isinstance(device_id, str) or not DEVICE_ID.match(device_id):
        raise PoisonMessage("invalid_message", "device_id: not a device id (it comes from the topic)")
    seq = data.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise PoisonMessage("invalid_message", "seq: must be a whole number >= 0")
    try:
        ts = parse_instant(data.get("ts"))
    except (ValueError, TypeError, OverflowError) as error:
        reason = str(error) if str(error).startswith("must") else 'must be an ISO 8601 time with a zone, e.g. "2026-11-22T10:00:00Z"'
        raise PoisonMessage("invalid_message", f"ts: {reason}") from None
    counters = data.get("counters")
    if not isinstance(counters, dict) or not counters:
        raise PoisonMessage("invalid_message", "counters: must be a non-empty object of meter -> running total")
    if len(counters) > MAX_COUNTERS:
        raise PoisonMessage("invalid_message", f"counters: at most {MAX_COUNTERS} counters")
    values = {}
    for meter, value in counters.items():
        if not METER.match(meter):
            raise PoisonMessage("invalid_message", f"counters.{meter[:64]}: not a meter name")
        values[meter] = _counter_value(meter, value)
    return DeviceMessage(merchant_id, device_id, CounterReading(seq, ts, values, ref))


def _counter_value(meter: str, value) -> Decimal:
    # A JSON number (int, or Decimal thanks to parse_float) or a decimal string.
    if isinstance(value, bool):
        value = None
    if isinstance(value, str):
        try:
            value = Decimal(value)
        except InvalidOperation:
            value = None
    if isinstance(value, int):
        value = Decimal(value)
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise PoisonMessage("invalid_message", f"counters.{meter}: must be a number >= 0")
    sign, digits, exponent = value.as_tuple()
    decimals = -exponent if exponent < 0 else 0
    if decimals > MAX_UNIT_DECIMALS or len(digits) - decimals > MAX_INTEGER_DIGITS:
        raise PoisonMessage(
            "invalid_message",
            f"counters.{meter}: at most {MAX_INTEGER_DIGITS} digits and {MAX_UNIT_DECIMALS} decimals",
        )
    return value


def ingest(messages: Sequence[tuple[str, str]], now: datetime) -> IngestReport:
    """Ingest (message id, body) pairs; see the module's docstring."""
    report = IngestReport()
    by_device: dict[tuple[str, str], list[CounterReading]] = {}
    for message_id, body in messages:
        try:
            parsed = parse_message(body, message_id)
            if parsed.reading.ts > now + FUTURE_TOLERANCE:
                raise PoisonMessage("invalid_message", f"ts: {body_ts(parsed)} is in the future (device clock?)")
        except PoisonMessage as poison:
            report.dead_letters.append((message_id, poison.code, poison.message))
            continue
        by_device.setdefault((parsed.merchant_id, parsed.device_id), []).append(parsed.reading)
    if not by_device:
        return report

    try:
        found, unprocessed = device_store.read_devices(by_device)
    except Exception:
        logger.exception("reading the devices of a batch failed")
        report.failed.update(r.ref for readings in by_device.values() for r in readings)
        return report

    for pair, readings in by_device.items():
        if pair in unprocessed:
            report.failed.update(r.ref for r in readings)
            continue
        device = found.get(pair)
        if device is None:
            for r in readings:
                report.dead_letters.append(
                    (r.ref, "device_not_attached", f"device {pair[1]} is not attached to a subscription")
                )
            continue
        try:
            update, writes = apply_to_device(device, readings)
            _bill_after_cancellation(device, readings, now)
        except Exception:
            logger.exception("ingesting a device's readings failed", extra={"device_id": pair[1]})
            report.failed.update(r.ref for r in readings)
            continue
        report.writes += writes
        for result in update.results:
            report.count(result.outcome)
        for reset in update.resets:
            logger.warning(
                "counter reset",
                extra={"merchant_id": pair[0], "device_id": pair[1], "meter": reset.meter, "seq": reset.seq,
                       "previous": str(reset.previous), "value": str(reset.value)},
            )
            from chalicelib import outcomes

            outcomes.report("counter_reset", pair[0], pair[1], device.subscription_id,
                            device.subscription.customer_id, reset)
        report.count("reset", len(update.resets))
    return report


def _bill_after_cancellation(device: device_store.Device, readings: Sequence[CounterReading], now: datetime) -> None:
    """Readings of a canceled subscription's device, timed before its
    cancellation, reach its last invoice: the subscription is marked due
    (services/issuing.py). After the write, and again on a redelivery (the
    readings then duplicates): a failure here sends the messages back, and
    marking a subscription due twice costs one look at it."""
    end = device.subscription.calendar.end
    if end is None or not any(reading.ts < end for reading in readings):
        return
    from chalicelib.services import issuing

    issuing.late_usage_arrived(device.merchant_id, device.subscription_id, now)


def body_ts(parsed: DeviceMessage) -> str:
    return parsed.reading.ts.isoformat().replace("+00:00", "Z")


def apply_to_device(device: device_store.Device, readings: Iterable[CounterReading]) -> tuple[CounterUpdate, int]:
    """Apply a device's readings and write the result, re-reading the device
    after a lost race. Returns the update and the number of items written
    (0: only duplicates, nothing to write)."""
    readings = list(readings)
    for attempt in range(WRITE_ATTEMPTS):
        calendar = device.subscription.calendar
        open_usage = device.open_usage
        hint = None
        if open_usage is not None and open_usage.subscription_id == device.subscription_id:
            from chalicelib.domain.periods import Period

            hint = Period(open_usage.period_start, open_usage.period_end)
        find = calendar.finder(hint)

        def period_of(ts):
            period = find(ts)
            return None if period is None else period.start

        update = apply_readings(device.counters, readings, period_of)
        if not update.changed:
            return update, 0
        new_open, closed = settle(open_usage, device.subscription_id, update.usage, lambda start: find(start).end)
        try:
            return update, device_store.save_readings(device, update.state, new_open, closed, update.resets)
        except device_store.StaleDevice:
            time.sleep(random.uniform(0, 0.005 * 2**attempt))
            fresh = device_store.find_device(device.merchant_id, device.device_id, consistent=True)
            if fresh is None:
                raise RuntimeError(f"device {device.device_id} disappeared") from None
            device = fresh
    raise RuntimeError(f"device {device.device_id}: too many concurrent writers; its messages come back")
