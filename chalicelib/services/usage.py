"""Usage from sources that are not devices (`POST /usage`), and a
subscription's usage per period (`GET /subscriptions/{id}/usage`).

`POST /usage`: every event is checked before anything is written (a 400
names the first bad event's field). An event whose id the merchant already
used is a duplicate: it changes nothing and is counted as such, so a
request sent again answers `accepted: 0, duplicates: n`. New events are
written with their period's tally in transactions (store/usage.py): an
event record only if its id is new, the tally only if unchanged since
read. The event records are the audit trail: nothing is edited or deleted;
a correction is an event of its own (`corrects`, a signed difference).
"""
from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from chalicelib.clock import clock, isoformat, parse_instant
from chalicelib.domain.errors import Conflict, InvalidRequest
from chalicelib.domain.money import format_decimal
from chalicelib.domain.usage import EventTally, UsageCalendar
from chalicelib.domain.usage import parse_instant as parse_event_instant
from chalicelib.store import usage as store

MAX_EVENTS = 500
# An event may be stamped a little ahead of our clock (its sender's clock);
# further ahead it is a mistake that would bill a period not yet begun.
FUTURE_TOLERANCE = timedelta(minutes=5)
# Races with concurrent requests (the same ids, the same period's tally)
# retried before answering 409.
ATTEMPTS = 6
TRANSACTION_ITEMS = 100


@dataclass(frozen=True, slots=True)
class EventInput:
    """One event of a `POST /usage` request, validated for shape."""

    event_id: str
    subscription_id: str
    meter: str
    quantity: Decimal
    timestamp: datetime | None  # None: the time the request is received
    corrects: str | None = None


def record_events(merchant_id: str, events: Sequence[EventInput]) -> dict:
    """Record a request's events; `{"accepted": n, "duplicates": m}`."""
    if len(events) > MAX_EVENTS:
        raise InvalidRequest(f"events: at most {MAX_EVENTS} events a request", param="events")
    now = clock().now()
    events = [event if event.timestamp is not None else replace(event, timestamp=now) for event in events]
    for i, event in enumerate(events):
        if event.timestamp > now + FUTURE_TOLERANCE:
            raise InvalidRequest(f"events[{i}].timestamp: is in the future", param=f"events[{i}].timestamp")
        if event.corrects is None and event.quantity < 0:
            raise InvalidRequest(
                f"events[{i}].quantity: must not be negative (only a correction carries a signed difference)",
                param=f"events[{i}].quantity",
            )
        if event.corrects is not None and event.corrects == event.event_id:
            raise InvalidRequest(f"events[{i}].corrects: an event cannot correct itself", param=f"events[{i}].corrects")
    calendars, canceled = _calendars(merchant_id, events)
    for i, event in enumerate(events):
        ended = canceled.get(event.subscription_id)
        if ended is not None and event.corrects is None and event.timestamp >= ended:
            raise InvalidRequest(
                f"events[{i}].timestamp: is after subscription {event.subscription_id} was canceled "
                f"({isoformat(ended)})", param=f"events[{i}].timestamp")
    written: set[str] = set()
    for attempt in range(ATTEMPTS):
        try:
            duplicates = _record(merchant_id, events, calendars, now, written)
            _bill_late_usage(merchant_id, events, written, canceled, now)
            return {"accepted": len(written), "duplicates": duplicates}
        except store.StaleUsage:
            time.sleep(random.uniform(0, 0.01 * 2**attempt))
    raise Conflict("too many concurrent writes to the same usage; retry the request", code="version_conflict")


def _bill_late_usage(merchant_id: str, events: Sequence[EventInput], written: set[str],
                     canceled: dict[str, datetime], now: datetime) -> None:
    """A canceled subscription that got usage owes a last invoice for it."""
    from chalicelib.services import issuing

    for subscription_id in sorted({e.subscription_id for e in events if e.event_id in written} & set(canceled)):
        issuing.late_usage_arrived(merchant_id, subscription_id, now)


def _calendars(merchant_id: str, events: Sequence[EventInput]) -> tuple[dict[str, UsageCalendar],
                                                                         dict[str, datetime]]:
    """Each subscription's calendar, and when the canceled ones were canceled."""
    from chalicelib.services.devices import subscription_calendar

    calendars: dict[str, UsageCalendar] = {}
    canceled: dict[str, datetime] = {}
    for i, event in enumerate(events):
        if event.subscription_id not in calendars:
            record, attached = subscription_calendar(
                merchant_id, event.subscription_id, param=f"events[{i}].subscription_id"
            )
            calendars[event.subscription_id] = attached.calendar
            if record.status == "canceled" and record.canceled_at:
                canceled[event.subscription_id] = parse_instant(record.canceled_at)
    return calendars, canceled


def _record(
    merchant_id: str, events: Sequence[EventInput], calendars: dict[str, UsageCalendar], now: datetime,
    written: set[str],
) -> int:
    """One attempt: plan against what is recorded now, then write in
    transactions. Adds what it wrote to `written` (a later attempt after a
    lost race must not count this request's own events as duplicates).
    Returns the number of duplicates."""
    wanted = {e.event_id for e in events} | {e.corrects for e in events if e.corrects}
    recorded = store.read_events(merchant_id, wanted)
    received_at = isoformat(now)
    new: dict[str, store.UsageEvent] = {}
    corrected_to: dict[str, Decimal] = {}  # correction id -> its target's quantity after it
    nets: dict[str, Decimal] = {}
    seen: set[str] = set()
    duplicates = 0
    for i, event in enumerate(events):
        if event.event_id in seen:
            duplicates += 1
            continue
        seen.add(event.event_id)
        if event.event_id in recorded:
            if event.event_id not in written:
                duplicates += 1
            continue
        if event.corrects is None:
            period = calendars[event.subscription_id].period_of(event.timestamp)
            if period is None:
                raise InvalidRequest(
                    f"events[{i}].timestamp: is before subscription {event.subscription_id} starts",
                    param=f"events[{i}].timestamp",
                )
            period_start = period.start
        else:
            target = new.get(event.corrects) or recorded.get(event.corrects)
            _check_correction(i, event, target)
            period_start = target.period_start
            corrected = nets.get(target.event_id, target.net_quantity) + event.quantity
            if corrected < 0:
                raise InvalidRequest(
                    f"events[{i}].quantity: would make event {target.event_id}'s quantity negative",
                    param=f"events[{i}].quantity",
                )
            nets[target.event_id] = corrected
            corrected_to[event.event_id] = corrected
        new[event.event_id] = store.UsageEvent(
            event_id=event.event_id,
            subscription_id=event.subscription_id,
            meter=event.meter,
            quantity=event.quantity,
            timestamp=event.timestamp,
            period_start=period_start,
            corrects=event.corrects,
            net_quantity=event.quantity,
            received_at=received_at,
        )
    if new:
        _write(merchant_id, list(new.values()), recorded, corrected_to, written)
    return duplicates


def _check_correction(i: int, event: EventInput, target: store.UsageEvent | None) -> None:
    param = f"events[{i}].corrects"
    if target is None:
        raise InvalidRequest(f"{param}: no event {event.corrects}", param=param)
    if target.corrects is not None:
        raise InvalidRequest(
            f"{param}: {target.event_id} is itself a correction; correct the original event {target.corrects}",
            param=param,
        )
    if target.subscription_id != event.subscription_id or target.meter != event.meter:
        raise InvalidRequest(
            f"{param}: {target.event_id} is of subscription {target.subscription_id} and meter {target.meter}; "
            "a correction must be of the same",
            param=param,
        )


def _write(
    merchant_id: str, events: list[store.UsageEvent], recorded: dict[str, store.UsageEvent],
    corrected_to: dict[str, Decimal], written: set[str],
) -> None:
    """Write the new events with their periods' tallies, in transactions of
    at most 100 items taken in the request's order. Each transaction moves
    what it touches on from the version the previous one left: the
    periods' tallies, and the events it corrects that are already recorded
    (their `net_quantity`)."""
    keys = {(e.subscription_id, e.period_start) for e in events}
    periods = store.read_period_events(merchant_id, keys)
    # Events already recorded (before this request, or by an earlier
    # transaction of it), as they are stored now.
    stored = dict(recorded)
    start = 0
    while start < len(events):
        chunk: list[store.UsageEvent] = []
        touched: set = set()
        fixed: set[str] = set()
        for event in events[start:]:
            period_key = (event.subscription_id, event.period_start)
            target = {event.corrects} if event.corrects in stored else set()
            size = len(chunk) + 1 + len(touched | {period_key}) + len(fixed | target)
            if chunk and size > TRANSACTION_ITEMS:
                break
            chunk.append(event)
            touched.add(period_key)
            fixed |= target
        puts = {e.event_id: e for e in chunk}
        tallies = {k: dict(periods[k].meters) for k in touched}
        nets = {t: stored[t].net_quantity for t in fixed}
        for event in chunk:
            meters = tallies[(event.subscription_id, event.period_start)]
            tally = meters.get(event.meter, EventTally())
            if event.corrects is None:
                meters[event.meter] = tally.record(event.event_id, event.quantity, event.timestamp)
                continue
            after = corrected_to[event.event_id]
            meters[event.meter] = tally.correct(event.corrects, event.quantity, after)
            if event.corrects in puts:
                puts[event.corrects] = replace(puts[event.corrects], net_quantity=after)
            else:
                nets[event.corrects] = after
        store.write_events(
            merchant_id,
            list(puts.values()),
            [(periods[k], tallies[k]) for k in touched],
            [(stored[t], nets[t]) for t in fixed],
        )
        written.update(puts)
        for k in touched:
            periods[k] = replace(periods[k], meters=tallies[k], version=periods[k].version + 1)
        for t in fixed:
            stored[t] = replace(stored[t], net_quantity=nets[t], version=stored[t].version + 1)
        stored.update(puts)
        start += len(chunk)


# ---------------------------------------------------------------------------
# A subscription's usage of a period


def subscription_usage(merchant_id: str, subscription_id: str, period_start: str | None) -> dict:
    """Per meter, the usage of the period that contains `period_start` (the
    current period without it), billed or not, and what of it was billed."""
    from chalicelib.services.devices import attachment_of
    from chalicelib.store import invoices as invoices_store

    record, billed_periods = invoices_store.subscription_for_billing(merchant_id, subscription_id)
    attached = attachment_of(record)
    if period_start is None:
        at = clock().now()
    else:
        try:
            at = parse_event_instant(period_start)
        except ValueError as error:
            message = str(error) if str(error).startswith("must") else "must be an ISO 8601 time with a zone (Z)"
            raise InvalidRequest(f"period_start: {message}", param="period_start") from None
    period = attached.calendar.period_of(at)
    if period is None:
        raise InvalidRequest(f"period_start: is before subscription {subscription_id} starts", param="period_start")
    tallies = store.period_tallies(merchant_id, subscription_id, period.start)
    billed_record = billed_periods.get(isoformat(period.start))
    billed = billed_record.meters() if billed_record is not None else {}
    meters = {}
    for meter in sorted(set(tallies) | set(billed)):
        tally = tallies.get(meter)
        done = billed.get(meter)
        meters[meter] = {
            "total": format_decimal(tally.total) if tally else "0",
            "maximum": None if tally is None or tally.maximum is None else format_decimal(tally.maximum),
            "last": None if tally is None or tally.last is None else format_decimal(tally.last),
            "last_at": None if tally is None or tally.last_at is None else isoformat(tally.last_at),
            "billed_total": None if done is None else format_decimal(done.total),
        }
    return {
        "object": "usage",
        "subscription_id": subscription_id,
        "period_start": isoformat(period.start),
        "period_end": isoformat(period.end),
        "invoiced": billed_record is not None,
        "meters": meters,
    }
