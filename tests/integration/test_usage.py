"""Usage from machines and systems, on moto: devices attached through the
API, counters through the usage queue's handler (as the IoT rule delivers
them), events through POST /usage, and what billing reads (usage_for,
usage_before)."""
from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import boto3
import pytest

from chalicelib.clock import FixedClock, use_clock
from chalicelib.domain.catalog import parse_offer
from chalicelib.domain.periods import Period
from chalicelib.domain.rating import MeterUsage, rate_usage
from chalicelib.store import devices as device_store
from chalicelib.store import usage as usage_store

UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)
NOV = Period(START, datetime(2026, 12, 1, tzinfo=UTC))
DEC = Period(NOV.end, datetime(2027, 1, 1, tzinfo=UTC))

OFFER = {
    "code": "clico-neksia",
    "name": "Clic&O Neksia",
    "currency": "EUR",
    "billing_interval": "month",
    "interval_count": 1,
    "components": [
        {"code": "base", "type": "flat", "amount": "49.00"},
        {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"},
        {"code": "calls", "type": "metered", "meter": "calls", "unit_amount": "0.50"},
        {"code": "support", "type": "time_and_materials", "hours_meter": "agent_hours",
         "hourly_rate": "38.00", "materials_meter": "parts_cost", "markup_percent": "15"},
    ],
}
OVERRIDES = {"montage": {"unit_amount": "1.05"}}


@pytest.fixture
def clock_start():
    """When this module's `clock` starts."""
    return START


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def subscribe(api, customer_name="Labo Martin") -> str:
    customer = api.post("/customers", {"name": customer_name, "email": "labo@martin.fr", "country": "FR"})
    assert customer.status == 201, customer
    subscription = api.post(
        "/subscriptions",
        {"customer_id": customer.json["id"], "offer_id": api.offer_id, "start_at": iso(START),
         "price_overrides": OVERRIDES},
    )
    assert subscription.status == 201, subscription
    return subscription.json["id"]


@pytest.fixture
def clico(clock, merchant):
    """Optique Durand's Clic&O offer, a customer subscribed from 1 Nov 2026
    (Paris time zone), and its lab machine `neksia-0042` attached."""
    offer = merchant.post("/offers", OFFER)
    assert offer.status == 201, offer
    merchant.offer_id = offer.json["id"]
    merchant.subscription_id = subscribe(merchant)
    attached = merchant.post("/devices", {"device_id": "neksia-0042", "subscription_id": merchant.subscription_id})
    assert attached.status == 201, attached
    merchant.merchant_id = merchant.merchant["id"]
    # Late in November: the machine's readings of the month are in the past.
    clock.set(datetime(2026, 11, 25, tzinfo=UTC))
    return merchant


def message(api, seq, ts, device_id="neksia-0042", merchant_id=None, **counters) -> str:
    """The body the IoT rule sends for a device's message (merchant and device from the topic)."""
    return json.dumps({"seq": seq, "ts": iso(ts), "counters": counters,
                       "merchant_id": merchant_id or api.merchant_id, "device_id": device_id})


def sqs_event(bodies) -> dict:
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "handle",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:UsageQueue",
                "awsRegion": "eu-west-1",
            }
            for body in bodies
        ]
    }


def deliver(client, event) -> list[str]:
    """Hand a batch to the usage queue's handler as Lambda does; the ids it reports failed."""
    response = client.lambda_.invoke("ingest_usage", event)
    return [item["itemIdentifier"] for item in response.payload["batchItemFailures"]]


def dead_letters() -> list[dict]:
    sqs = boto3.client("sqs")
    url = os.environ["USAGE_DEAD_LETTER_QUEUE_URL"]
    found = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get(
            "Messages", []
        )
        if not batch:
            return found
        for m in batch:
            found.append({"body": json.loads(m["Body"]), "attributes": m.get("MessageAttributes", {})})
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def usage_of(api, period=NOV) -> dict:
    response = api.get(f"/subscriptions/{api.subscription_id}/usage?period_start={iso(period.start)}")
    assert response.status == 200, response
    return response.json["meters"]


# --- devices --------------------------------------------------------------


def test_attach_a_device_and_read_it(clico):
    again = clico.post("/devices", {"device_id": "neksia-0042", "subscription_id": clico.subscription_id})
    assert again.status == 200
    device = clico.get("/devices/neksia-0042")
    assert device.status == 200
    body = device.json
    assert body["id"] == "neksia-0042" and body["subscription_id"] == clico.subscription_id
    assert body["counters"] == {} and body["last_reading"] is None
    assert [a["subscription_id"] for a in body["attachments"]] == [clico.subscription_id]


def test_attach_refuses_what_does_not_exist_or_is_not_yours(clico, new_merchant):
    missing = clico.post("/devices", {"device_id": "neksia-0043", "subscription_id": "sub_" + "0" * 26})
    assert missing.status == 404 and missing.json["error"]["param"] == "subscription_id"
    bad = clico.post("/devices", {"device_id": "neksia/0043", "subscription_id": clico.subscription_id})
    assert bad.status == 400 and bad.json["error"]["param"] == "device_id"
    unknown = clico.post("/devices", {"device_id": "x", "subscription_id": clico.subscription_id, "color": "red"})
    assert unknown.status == 400 and unknown.json["error"]["param"] == "color"
    other = new_merchant(name="Autre", invoice_prefix="AU")
    assert other.post("/devices", {"device_id": "neksia-0042", "subscription_id": clico.subscription_id}).status == 404
    assert other.get("/devices/neksia-0042").status == 404
    assert clico.get("/devices/nope").status == 404
    assert other.get(f"/subscriptions/{clico.subscription_id}/usage").status == 404


def test_counters_become_usage_and_the_device_shows_its_last_readings(clico, client):
    failed = deliver(client, sqs_event([message(clico, 1041, utc(2026, 11, 2, 10), montages=12345, tracings=210)]))
    assert failed == []
    failed = deliver(client, sqs_event([message(clico, 1042, utc(2026, 11, 3, 10), montages=12360, tracings=211)]))
    assert failed == []
    meters = usage_of(clico)
    assert meters["montages"]["total"] == "15" and meters["tracings"]["total"] == "1"
    assert meters["montages"]["last_at"] == "2026-11-03T10:00:00Z"
    device = clico.get("/devices/neksia-0042").json
    assert device["counters"] == {
        "montages": {"value": "12360", "seq": 1042, "ts": "2026-11-03T10:00:00Z"},
        "tracings": {"value": "211", "seq": 1042, "ts": "2026-11-03T10:00:00Z"},
    }
    assert device["last_reading"] == {"seq": 1042, "ts": "2026-11-03T10:00:00Z"}
    assert usage_store.usage_for(clico.merchant_id, clico.subscription_id, iso(NOV.start)) == {
        "montages": MeterUsage(Decimal(15), Decimal(15), Decimal(15)),
        "tracings": MeterUsage(Decimal(1), Decimal(1), Decimal(1)),
    }


def test_every_counter_rule_through_the_handler(clico, client):
    deliver(client, sqs_event([message(clico, 1, utc(2026, 11, 2), montages=100)]))  # baseline
    deliver(client, sqs_event([message(clico, 3, utc(2026, 11, 4), montages=130)]))  # +30
    deliver(client, sqs_event([message(clico, 2, utc(2026, 11, 3), montages=120)]))  # late: recorded, ignored
    deliver(client, sqs_event([message(clico, 3, utc(2026, 11, 4), montages=130)]))  # duplicate
    deliver(client, sqs_event([message(clico, 4, utc(2026, 11, 5), montages=5)]))  # reset: +5, flagged
    use_clock(FixedClock(utc(2026, 12, 3)))
    deliver(client, sqs_event([message(clico, 5, utc(2026, 12, 1, 2), montages=9)]))  # December: +4
    assert usage_of(clico)["montages"]["total"] == "35"
    assert usage_of(clico, DEC)["montages"]["total"] == "4"
    device = clico.get("/devices/neksia-0042").json
    assert device["late_readings"] == 1 and device["counter_resets"] == 1
    [reset] = device_store.counter_resets(clico.merchant_id)
    assert (reset.device_id, reset.meter, reset.seq, reset.previous, reset.value) == ("neksia-0042", "montages", 4, "130", "5")
    assert reset.ts == "2026-11-05T00:00:00Z" and reset.subscription_id == clico.subscription_id


def test_a_batch_delivered_twice_counts_once(clico, client):
    deliver(client, sqs_event([message(clico, 1, utc(2026, 11, 2), montages=100)]))
    bodies = [message(clico, seq, utc(2026, 11, 2 + seq), montages=100 + 10 * seq) for seq in (2, 3, 4)]
    assert deliver(client, sqs_event(bodies)) == []
    assert deliver(client, sqs_event(bodies)) == []
    assert deliver(client, sqs_event(list(reversed(bodies)))) == []
    assert usage_of(clico)["montages"]["total"] == "40"


def test_a_poison_message_is_parked_with_its_reason_and_the_batch_goes_on(clico, client):
    good = message(clico, 1, utc(2026, 11, 2), montages=100)
    later = message(clico, 2, utc(2026, 11, 3), montages=107)
    poison = "{not json"
    no_seq = json.dumps({"ts": "2026-11-03T00:00:00Z", "counters": {"montages": 1},
                         "merchant_id": clico.merchant_id, "device_id": "neksia-0042"})
    negative = message(clico, 9, utc(2026, 11, 3), montages=-1)
    float_ts = json.dumps({"seq": 3, "ts": 1700000000, "counters": {"montages": 1},
                           "merchant_id": clico.merchant_id, "device_id": "neksia-0042"})
    event = sqs_event([good, poison, no_seq, later, negative, float_ts])
    assert deliver(client, event) == []
    assert usage_of(clico)["montages"]["total"] == "7"
    parked = dead_letters()
    assert [p["body"]["original"] for p in parked] == [poison, no_seq, negative, float_ts]
    assert [p["body"]["reason_code"] for p in parked] == ["unparseable", "invalid_message", "invalid_message",
                                                        "invalid_message"]
    assert parked[1]["body"]["reason"].startswith("seq:")
    assert parked[2]["body"]["reason"].startswith("counters.montages:")
    assert parked[3]["body"]["reason"].startswith("ts:")
    assert parked[0]["attributes"]["reason_code"]["StringValue"] == "unparseable"
    ids = [r["messageId"] for r in event["Records"]]
    assert [p["body"]["message_id"] for p in parked] == [ids[1], ids[2], ids[4], ids[5]]


def test_a_device_not_attached_goes_to_the_dead_letter_queue(clico, client):
    stranger = message(clico, 1, utc(2026, 11, 2), device_id="neksia-9999", montages=1)
    assert deliver(client, sqs_event([stranger])) == []
    [parked] = dead_letters()
    assert parked["body"]["reason_code"] == "device_not_attached"
    assert "neksia-9999" in parked["body"]["reason"] and parked["body"]["original"] == stranger
    # Once attached, the parked message moved back to the queue is ingested.
    clico.post("/devices", {"device_id": "neksia-9999", "subscription_id": clico.subscription_id})
    redriven = json.dumps(parked["body"])
    deliver(client, sqs_event([redriven]))
    deliver(client, sqs_event([message(clico, 2, utc(2026, 11, 3), device_id="neksia-9999", montages=4)]))
    assert usage_of(clico)["montages"]["total"] == "3"
    assert clico.get("/devices/neksia-9999").json["last_reading"]["seq"] == 2


def test_the_merchant_comes_from_the_topic_never_from_the_payload(clico, client, new_merchant):
    other = new_merchant(name="Autre", invoice_prefix="AU")
    # A device publishing on another merchant's topic names that merchant:
    # it reaches only that merchant's devices, where it does not exist.
    body = message(clico, 1, utc(2026, 11, 2), merchant_id=other.merchant["id"], montages=1)
    assert deliver(client, sqs_event([body])) == []
    assert [p["body"]["reason_code"] for p in dead_letters()] == ["device_not_attached"]
    assert clico.get("/devices/neksia-0042").json["last_reading"] is None


def test_a_reading_from_the_future_is_refused(clico, client):
    body = message(clico, 1, datetime(2026, 11, 25, 2, tzinfo=UTC), montages=1)
    assert deliver(client, sqs_event([body])) == []
    [parked] = dead_letters()
    assert parked["body"]["reason"].startswith("ts:") and "future" in parked["body"]["reason"]


def test_usage_is_kept_per_period_after_the_device_moves_on(clico, client):
    deliver(client, sqs_event([message(clico, 1, utc(2026, 11, 2), montages=100)]))
    deliver(client, sqs_event([message(clico, 2, utc(2026, 11, 20), montages=150)]))
    clico_clock = utc(2027, 1, 15)
    use_clock(FixedClock(clico_clock))
    # One batch across three periods: November closes, December is whole, January stays open.
    deliver(
        client,
        sqs_event([message(clico, 3, utc(2026, 11, 29), montages=160), message(clico, 4, utc(2026, 12, 10), montages=200),
                   message(clico, 5, utc(2027, 1, 2), montages=201)]),
    )
    m, s = clico.merchant_id, clico.subscription_id
    assert usage_store.usage_for(m, s, NOV.start)["montages"].total == 60
    assert usage_store.usage_for(m, s, DEC.start)["montages"].total == 40
    assert usage_store.usage_for(m, s, DEC.end)["montages"].total == 1
    before = usage_store.usage_before(m, s, DEC.end)
    assert {p: u["montages"].total for p, u in before.items()} == {iso(NOV.start): 60, iso(DEC.start): 40}
    assert usage_store.usage_before(m, s, utc(2027, 2, 1))[iso(DEC.end)]["montages"].total == 1


def test_moving_a_device_keeps_its_history_and_its_usage(clico, client, clock):
    deliver(client, sqs_event([message(clico, 1, utc(2026, 11, 2), montages=100)]))
    deliver(client, sqs_event([message(clico, 2, utc(2026, 11, 3), montages=110)]))
    first = clico.subscription_id
    now = clock.now()
    clock.set(START)
    second = subscribe(clico, "Labo Dupont")
    clock.set(now)
    moved = clico.post("/devices", {"device_id": "neksia-0042", "subscription_id": second})
    assert moved.status == 200 and moved.json["subscription_id"] == second
    assert [(a["subscription_id"], a["previous_subscription_id"]) for a in moved.json["attachments"]] == [
        (first, None), (second, first)]
    deliver(client, sqs_event([message(clico, 3, utc(2026, 11, 4), montages=125)]))
    m = clico.merchant_id
    assert usage_store.usage_for(m, first, NOV.start)["montages"].total == 10
    assert usage_store.usage_for(m, second, NOV.start)["montages"].total == 15
    assert device_store.attached_devices(m, first) == []
    assert device_store.attached_devices(m, second) == ["neksia-0042"]
    # Back to the first subscription within the same period: both stints count there.
    clico.post("/devices", {"device_id": "neksia-0042", "subscription_id": first})
    deliver(client, sqs_event([message(clico, 4, utc(2026, 11, 5), montages=126)]))
    assert usage_store.usage_for(m, first, NOV.start)["montages"].total == 11
    assert usage_store.usage_for(m, second, NOV.start)["montages"].total == 15


@pytest.fixture
def atomic_requests(monkeypatch):
    """DynamoDB applies each request atomically (a conditional write's check
    and write are one step); moto in-process does not when threads call it
    at once. Serialising moto's handling of each request restores that
    guarantee, and only that: the threads still interleave between their
    requests (read, compute, conditional write), which is the race under test."""
    from moto.core.botocore_stubber import BotocoreStubber

    lock = threading.Lock()
    original = BotocoreStubber.__call__

    def one_at_a_time(self, *args, **kwargs):
        with lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(BotocoreStubber, "__call__", one_at_a_time)


def test_eight_threads_ingesting_one_device_end_with_the_exact_total(clico, client, atomic_requests, monkeypatch):
    from chalicelib import jobs
    from chalicelib.observability import metrics
    from infra.local.lambda_events import LocalContext

    # The job itself, without the app's middleware: that publishes the
    # process's metrics after each invocation, and Lambda never runs two
    # invocations in one process at once, as these threads do.
    handler = jobs.ingest_usage
    lost_races = []
    save = device_store.save_readings

    def counting_lost_races(*args, **kwargs):
        try:
            return save(*args, **kwargs)
        except device_store.StaleDevice:
            lost_races.append(1)
            raise

    monkeypatch.setattr(device_store, "save_readings", counting_lost_races)
    deliver(client, sqs_event([message(clico, 0, utc(2026, 11, 2), montages=1000)]))
    readings = [message(clico, seq, utc(2026, 11, 2) + timedelta(minutes=seq), montages=1000 + 3 * seq)
                for seq in range(1, 161)]
    shares = [readings[i::8] for i in range(8)]
    errors = []

    def ingest(share):
        try:
            pending = list(share)
            for _ in range(50):
                if not pending:
                    return
                batch = sqs_event(pending[:5])
                result = handler(batch, LocalContext())
                failed = [f["itemIdentifier"] for f in result["batchItemFailures"]]
                ids = {r["messageId"]: r["body"] for r in batch["Records"]}
                pending = [ids[i] for i in failed] + pending[5:]
            errors.append("gave up")
        except Exception as error:  # the test reports it, not the thread
            errors.append(repr(error))

    threads = [threading.Thread(target=ingest, args=(share,)) for share in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    metrics.clear_metrics()
    assert errors == []
    assert lost_races, "the threads never raced: the test proved nothing"
    assert usage_store.usage_for(clico.merchant_id, clico.subscription_id, NOV.start)["montages"].total == 480
    assert clico.get("/devices/neksia-0042").json["counters"]["montages"]["value"] == "1480"


def test_tracings_are_recorded_but_not_billed(clico, client):
    deliver(client, sqs_event([message(clico, 1, utc(2026, 11, 2), montages=100, tracings=40)]))
    deliver(client, sqs_event([message(clico, 2, utc(2026, 11, 9), montages=112, tracings=45)]))
    assert usage_of(clico)["tracings"]["total"] == "5"
    usage = usage_store.usage_for(clico.merchant_id, clico.subscription_id, iso(NOV.start))
    lines = rate_usage(parse_offer(OFFER), OVERRIDES, usage, NOV)
    assert "tracings" in usage
    assert not any("tracing" in line.description for line in lines)
    [montage] = [line for line in lines if line.component == "montage"]
    assert (montage.quantity, montage.unit_amount, montage.amount) == (12, Decimal("1.05"), Decimal("12.60"))


# --- POST /usage ----------------------------------------------------------


def event(api, event_id, quantity, ts=None, meter="calls", **more) -> dict:
    return {"event_id": event_id, "subscription_id": api.subscription_id, "meter": meter,
            "quantity": quantity, "timestamp": iso(ts or utc(2026, 11, 2, 10)), **more}


def test_post_usage_counts_each_event_once(clico):
    clico_clock = utc(2026, 11, 22, 12)
    use_clock(FixedClock(clico_clock))
    body = {"events": [event(clico, "call-88121", "1"), event(clico, "call-88122", "1", utc(2026, 11, 3)),
                       event(clico, "rdv-7", "7.5", meter="agent_hours"),
                       event(clico, "call-88121", "1")]}
    first = clico.post("/usage", body)
    assert first.status == 200 and first.json == {"accepted": 3, "duplicates": 1}
    again = clico.post("/usage", body)
    assert again.status == 200 and again.json == {"accepted": 0, "duplicates": 4}
    meters = usage_of(clico)
    assert meters["calls"]["total"] == "2" and meters["agent_hours"]["total"] == "7.5"
    assert meters["calls"]["last_at"] == "2026-11-03T00:00:00Z"


def test_post_usage_names_the_bad_event(clico):
    use_clock(FixedClock(utc(2026, 11, 22, 12)))
    good = event(clico, "e0", "1")
    cases = [
        ({"events": [good, good, good, {**good, "quantity": 3.5}]}, "events[3].quantity"),
        ({"events": [good, {**good, "timestamp": "0001-01-01T00:00:00+01:00"}]}, "events[1].timestamp"),
        ({"events": [{**good, "timestamp": "9999-12-31T00:00:00Z"}]}, "events[0].timestamp"),
        ({"events": [good, {**good, "quantity": "1e3"}]}, "events[1].quantity"),
        ({"events": [{**good, "quantity": "-1"}]}, "events[0].quantity"),
        ({"events": [{**good, "timestamp": "2026-11-02"}]}, "events[0].timestamp"),
        ({"events": [{**good, "timestamp": "2026-12-02T00:00:00Z"}]}, "events[0].timestamp"),
        ({"events": [{**good, "timestamp": "2026-10-31T00:00:00Z"}]}, "events[0].timestamp"),
        ({"events": [{**good, "meter": "bad meter"}]}, "events[0].meter"),
        ({"events": [{**good, "colour": "red"}]}, "events[0].colour"),
        ({"events": [{**good, "subscription_id": "sub_" + "1" * 26}]}, "events[0].subscription_id"),
        ({"events": [{**good, "event_id": "x", "corrects": "never-sent", "quantity": "-1"}]}, "events[0].corrects"),
        ({"events": [good] * 501}, "events"),
        ({"events": []}, "events"),
    ]
    for body, param in cases:
        response = clico.post("/usage", body)
        assert response.status in (400, 404), (param, response)
        assert response.json["error"]["param"] == param, (param, response)
    # Nothing of a refused request was recorded.
    assert clico.post("/usage", {"events": [good]}).json == {"accepted": 1, "duplicates": 0}


def test_a_correction_is_a_signed_difference_of_the_same_subscription_and_meter(clico):
    use_clock(FixedClock(utc(2026, 12, 3, 12)))
    clico.post("/usage", {"events": [event(clico, "rdv-7", "7.5", meter="agent_hours"),
                                     event(clico, "rdv-8", "2", utc(2026, 11, 4), meter="agent_hours")]})
    fix = event(clico, "rdv-7-fix", "-1.25", utc(2026, 12, 2), meter="agent_hours", corrects="rdv-7")
    assert clico.post("/usage", {"events": [fix]}).json == {"accepted": 1, "duplicates": 0}
    assert clico.post("/usage", {"events": [fix]}).json == {"accepted": 0, "duplicates": 1}
    meters = usage_of(clico)
    # The correction counts in the corrected event's period, whatever its own time.
    assert meters["agent_hours"]["total"] == "8.25"
    assert meters["agent_hours"]["last"] == "2" and meters["agent_hours"]["maximum"] == "7.5"
    other_meter = event(clico, "x1", "-1", meter="calls", corrects="rdv-7")
    assert clico.post("/usage", {"events": [other_meter]}).json["error"]["param"] == "events[0].corrects"
    of_a_fix = event(clico, "x2", "1", meter="agent_hours", corrects="rdv-7-fix")
    assert clico.post("/usage", {"events": [of_a_fix]}).json["error"]["param"] == "events[0].corrects"
    too_much = event(clico, "x3", "-6.5", meter="agent_hours", corrects="rdv-7")
    assert clico.post("/usage", {"events": [too_much]}).json["error"]["param"] == "events[0].quantity"
    # Correcting an event of the same request, twice.
    body = {"events": [event(clico, "c1", "10", meter="calls"),
                       event(clico, "c1-a", "-3", meter="calls", corrects="c1"),
                       event(clico, "c1-b", "1", meter="calls", corrects="c1")]}
    assert clico.post("/usage", body).json == {"accepted": 3, "duplicates": 0}
    assert usage_of(clico)["calls"]["total"] == "8"
    assert usage_of(clico)["calls"]["last"] == "8"
    assert clico.post("/usage", {"events": [event(clico, "c1-c", "-8", meter="calls", corrects="c1")]}).json == {
        "accepted": 1, "duplicates": 0}
    assert clico.post("/usage", {"events": [event(clico, "c1-d", "-1", meter="calls", corrects="c1")]}).status == 400


def test_a_large_request_is_written_in_several_transactions(clico, monkeypatch):
    from chalicelib.services import usage as usage_service
    from chalicelib.store import dynamo

    use_clock(FixedClock(utc(2026, 12, 20)))
    # A transaction of 8 items instead of DynamoDB's 100: the same splitting
    # with 30 events (moto copies the whole table for every item of a
    # transaction, so 100-item ones would take most of a minute here).
    monkeypatch.setattr(usage_service, "TRANSACTION_ITEMS", 8)
    transactions = []

    def count(params, **_):
        transactions.append(len(params["TransactItems"]))

    dynamo.client().meta.events.register("before-parameter-build.dynamodb.TransactWriteItems", count)
    try:
        times = [utc(2026, 11, 2) + timedelta(days=i % 40) for i in range(0, 60, 2)]
        events = [event(clico, f"call-{i}", "1", ts) for i, ts in enumerate(times)]
        assert clico.post("/usage", {"events": events}).json == {"accepted": 30, "duplicates": 0}
        assert len(transactions) >= 4 and max(transactions) <= 8, transactions
        # Each transaction: its events and the tallies of the (at most two) periods they fall in.
        assert 30 + len(transactions) <= sum(transactions) <= 30 + 2 * len(transactions)
        nov = sum(1 for ts in times if ts < NOV.end)
        assert 0 < nov < 30
        assert usage_of(clico)["calls"]["total"] == str(nov)
        assert usage_of(clico, DEC)["calls"]["total"] == str(30 - nov)
        written = len(transactions)
        assert clico.post("/usage", {"events": events}).json == {"accepted": 0, "duplicates": 30}
        assert len(transactions) == written  # duplicates write nothing
    finally:
        dynamo.client().meta.events.unregister("before-parameter-build.dynamodb.TransactWriteItems", count)


def test_usage_of_a_billed_period_stays_there_for_the_next_invoice(clico, client):
    """Late usage: what arrives for a period after it was invoiced is found
    by comparing usage_before with what was billed."""
    deliver(client, sqs_event([message(clico, 1, utc(2026, 11, 2), montages=100)]))
    deliver(client, sqs_event([message(clico, 2, utc(2026, 11, 20), montages=110)]))
    m, s = clico.merchant_id, clico.subscription_id
    billed = usage_store.usage_for(m, s, NOV.start)
    use_clock(FixedClock(utc(2026, 12, 3)))
    # The machine was offline at the boundary: its last November readings arrive in December.
    deliver(client, sqs_event([message(clico, 3, utc(2026, 11, 30, 20), montages=118),
                               message(clico, 4, utc(2026, 12, 2), montages=120)]))
    clico.post("/usage", {"events": [event(clico, "late-call", "1", utc(2026, 11, 28))]})
    now = usage_store.usage_before(m, s, DEC.start)[iso(NOV.start)]
    assert billed["montages"].total == 10
    assert now["montages"].total - billed["montages"].total == 8
    assert now["calls"].total == 1


def test_subscription_usage_of_any_instant_of_a_period(clico, client):
    deliver(client, sqs_event([message(clico, 1, utc(2026, 11, 2), montages=100)]))
    deliver(client, sqs_event([message(clico, 2, utc(2026, 11, 3), montages=101)]))
    response = clico.get(f"/subscriptions/{clico.subscription_id}/usage?period_start=2026-11-15T08:00:00Z")
    assert response.json["period_start"] == "2026-11-01T00:00:00Z"
    assert response.json["period_end"] == "2026-12-01T00:00:00Z"
    assert response.json["invoiced"] is False
    assert response.json["meters"]["montages"]["billed_total"] is None
    current = clico.get(f"/subscriptions/{clico.subscription_id}/usage")
    assert current.json["period_start"] == "2026-11-01T00:00:00Z"
    bad = clico.get(f"/subscriptions/{clico.subscription_id}/usage?period_start=yesterday")
    assert bad.status == 400 and bad.json["error"]["param"] == "period_start"
    early = clico.get(f"/subscriptions/{clico.subscription_id}/usage?period_start=2026-10-01T00:00:00Z")
    assert early.status == 400 and early.json["error"]["param"] == "period_start"


# --- the sample events of events/ -----------------------------------------

EVENTS = os.path.join(os.path.dirname(__file__), "..", "..", "events")


def load(name: str) -> dict:
    with open(os.path.join(EVENTS, name)) as f:
        return json.load(f)


def test_the_sample_events_drive_the_handlers(clico, client):
    iot = load("iot_counters.json")
    batch = load("sqs_usage_batch.json")
    [carried] = [r for r in batch["Records"] if json.loads(r["body"])["seq"] == iot["seq"]]
    assert json.loads(carried["body"])["counters"] == iot["counters"]
    use_clock(FixedClock(utc(2026, 11, 23)))
    # The samples name a sample merchant: rewrite the topic's merchant to ours.
    for record in batch["Records"]:
        body = json.loads(record["body"])
        body["merchant_id"] = clico.merchant_id
        record["body"] = json.dumps(body)
    assert deliver(client, batch) == []
    device = clico.get(f"/devices/{json.loads(batch['Records'][0]['body'])['device_id']}").json
    assert device["last_reading"]["seq"] == max(json.loads(r["body"])["seq"] for r in batch["Records"])
    request = load("api_post_usage.json")
    body = json.loads(request["body"])
    for item in body["events"]:
        item["subscription_id"] = clico.subscription_id
    response = clico.post("/usage", body)
    assert response.status == 200 and response.json == {"accepted": len(body["events"]), "duplicates": 0}
