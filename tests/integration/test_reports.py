"""Reports on a known October and November, every figure worked out by hand;
the figures count each fact once whatever the stream redelivers; the usage
statistics; the accounting CSV read back with the csv module.

The facts are made through the HTTP API and the billing run (moto,
localstripe); the billing table's stream is delivered to the `report_feed`
function as Lambda would (tests/integration/table_stream.py)."""
from __future__ import annotations

import csv
import gzip
import io
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from chalicelib import jobs
from infra.local.lambda_events import LocalContext
from tests.integration.domain_events import published  # noqa: F401  (fixture)
from tests.integration.table_stream import billing_table_stream
from tests.integration.test_billing import (
    CARD_DECLINED_ON_CHARGE, device_reading, invoices_of, iso, new_customer, record_usage, simple_offer, subscribe,
)

UTC = timezone.utc
# Optique Durand is in Paris: 1 Oct 00:00 (CEST) is 30 Sep 22:00 UTC,
# 1 Nov 00:00 (CET) is 31 Oct 23:00 UTC. Invoices finalized at those
# instants belong to October and November, not to the UTC month before.
OCT_1 = datetime(2026, 9, 30, 22, 0, tzinfo=UTC)
NOV_1 = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
DEC_1 = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)


@pytest.fixture
def clock_start():
    """When this module's `clock` starts."""
    return OCT_1


@pytest.fixture
def feed(aws):
    from app import report_feed

    stream = billing_table_stream()
    stream.handler = report_feed
    return stream


def deliver(feed) -> None:
    feed.deliver(feed.handler)
    assert not feed.pending, "the feed keeps failing"


def at(clock, year: int, month: int, day: int) -> None:
    """Mid-morning in Paris on that day."""
    clock.set(datetime(year, month, day, 9, tzinfo=UTC))


def summary(api, month: str) -> dict:
    response = api.get(f"/reports/summary?month={month}")
    assert response.status == 200, response
    return response.json


@pytest.fixture
def known_months(merchant, clock, client, feed):
    """Optique Durand, EUR, French VAT 20%. Offers: basic (base 49.00 a
    month, montage 1.20) and premium (base 99.00, montage 1.20).

    October: S1, S2, S3 start on basic on 1 Oct; each first invoice is
    49.00 + VAT 9.80 = 58.80, paid. S1 makes 20 montages on 15 Oct.

    November:
    - 1 Nov, the run: S1 87.60 (October's usage 20 x 1.20 = 24.00, base
      49.00, VAT 14.60), S2 58.80, S3 58.80, all paid.
    - 1 Nov: S4 starts on basic with a card refused at the charge: 58.80
      open, S4 past_due.
    - S2 makes 5 montages on 5 Nov; 16 Nov 23:00 UTC it moves to premium at
      once. Period 31 Oct 23:00 -> 30 Nov 23:00 (30 days), 14 days left:
      usage 5 x 1.20 = 6.00, unused basic -49.00 x 14/30 = -22.87, premium
      99.00 x 14/30 = 46.20; subtotal 29.33, VAT 5.87, total 35.20, paid.
    - S3 makes 3 montages on 8 Nov; 20 Nov 23:00 UTC it is canceled at
      once, 10 days left: usage 3.60, unused base -49.00 x 10/30 = -16.33;
      subtotal -12.73, VAT -2.55, total -15.28 (the customer's credit),
      nothing due: paid at once, 0.00 collected.
    - S1 makes 10 montages (POST /usage, 10 Nov) and 12 on its device
      (1000 on 2 Nov, the baseline, then 1012 on 29 Nov); S2 7 on 25 Nov.
    """
    api = merchant
    merchant_id = api.merchant["id"]
    basic = simple_offer(api, code="basic")
    premium = simple_offer(api, code="premium", base="99.00")
    subs = {}
    for name in ("S1", "S2", "S3"):
        customer = new_customer(api, name=f"Client {name}")
        subs[name] = subscribe(api, customer, basic, start_at=iso(OCT_1))["id"]  # first invoice issued, paid
    at(clock, 2026, 10, 15)
    record_usage(api, subs["S1"], clock.now(), montages="20")
    deliver(feed)

    clock.set(NOV_1 + timedelta(minutes=5))
    assert jobs.billing_scheduler(clock.now(), inline=True)["due"] == 3
    late_payer = new_customer(api, name="Client S4", card=CARD_DECLINED_ON_CHARGE)
    subs["S4"] = subscribe(api, late_payer, basic, start_at=iso(NOV_1))["id"]
    [s4_first] = invoices_of(api, subs["S4"])  # issued with the subscription, its charge declined
    assert s4_first["status"] == "open"
    assert api.post("/devices", {"device_id": "neksia-0042", "subscription_id": subs["S1"]}).status == 201
    at(clock, 2026, 11, 2)
    device_reading(client, merchant_id, 1, clock.now(), montages=1000)
    at(clock, 2026, 11, 5)
    record_usage(api, subs["S2"], clock.now(), montages="5")
    at(clock, 2026, 11, 8)
    record_usage(api, subs["S3"], clock.now(), montages="3")
    at(clock, 2026, 11, 10)
    record_usage(api, subs["S1"], clock.now(), montages="10")

    clock.set(datetime(2026, 11, 16, 23, tzinfo=UTC))
    changed = api.post(f"/subscriptions/{subs['S2']}/change", {"offer_id": premium, "effective": "immediately"})
    assert changed.status == 200, changed
    upgrade = invoices_of(api, subs["S2"])[-1]  # issued and charged with the change
    assert (upgrade["subtotal"], upgrade["total"], upgrade["status"]) == ("29.33", "35.20", "paid")

    clock.set(datetime(2026, 11, 20, 23, tzinfo=UTC))
    canceled = api.post(f"/subscriptions/{subs['S3']}/cancel", {"at_period_end": False})
    assert canceled.status == 200, canceled
    cancel = invoices_of(api, subs["S3"])[-1]  # issued with the cancellation
    assert (cancel["subtotal"], cancel["total"], cancel["amount_due"], cancel["status"]) == (
        "-12.73", "-15.28", "0.00", "paid")

    at(clock, 2026, 11, 25)
    record_usage(api, subs["S2"], clock.now(), montages="7")
    at(clock, 2026, 11, 29)
    device_reading(client, merchant_id, 2, clock.now(), montages=1012)
    clock.set(datetime(2026, 11, 30, 12, tzinfo=UTC))
    deliver(feed)
    return subs


NOVEMBER = {
    # 1 Nov run 87.60 + 58.80 + 58.80, S4 58.80, upgrade 35.20, cancel -15.28
    "invoiced": "283.92",
    # the same but S4's (unpaid), the cancel paying 0.00
    "collected": "240.40",
    "outstanding": "58.80",  # S4's first invoice
    # usage lines of November's invoices: 24.00 (S1's October usage) + 6.00 + 3.60
    "usage_charges": "33.60",
    # S1 basic 49.00 + S2 premium 99.00 + S4 basic 49.00 (past_due: still live)
    "mrr_recurring": "197.00",
    "mrr_usage": "11.20",  # (33.60 + 0.00 in October + 0.00 in September) / 3
    "mrr": "208.20",
    "arr": "2498.40",
    "active_subscriptions": 3,  # S1, S2, S4
    "active_subscriptions_at_start": 3,  # S1, S2, S3
    "new_subscriptions": 1,  # S4
    "churned_subscriptions": 1,  # S3
    "churn_rate": "0.3333",  # 1 / 3
    "usage": {"montages": "37"},  # 5 + 3 + 10 + 12 (device) + 7
}

OCTOBER = {
    "invoiced": "176.40", "collected": "176.40", "outstanding": "0.00", "usage_charges": "0.00",
    "mrr_recurring": "147.00", "mrr_usage": "0.00", "mrr": "147.00", "arr": "1764.00",
    "active_subscriptions": 3, "active_subscriptions_at_start": 0, "new_subscriptions": 3,
    "churned_subscriptions": 0, "churn_rate": None, "usage": {"montages": "20"},
}


def test_a_known_month_every_figure_by_hand(merchant, new_merchant, known_months, clock, feed):
    report = summary(merchant, "2026-11")
    assert report["month"] == "2026-11" and set(report["currencies"]) == {"EUR"}
    assert report["currencies"]["EUR"] == NOVEMBER
    assert summary(merchant, "2026-10")["currencies"]["EUR"] == OCTOBER
    assert summary(merchant, "2026-09")["currencies"] == {}

    # December's run: S1, S2 and S4 renew (S4's 58.80 refused again). What
    # is true at the end of November stays as it was; December starts from it.
    clock.set(DEC_1 + timedelta(minutes=5))
    assert jobs.billing_scheduler(clock.now(), inline=True)["due"] == 3
    deliver(feed)
    assert summary(merchant, "2026-11")["currencies"]["EUR"] == NOVEMBER
    december = summary(merchant, "2026-12")["currencies"]["EUR"]
    assert december["outstanding"] == "117.60"  # S4: November's and December's 58.80
    assert december["active_subscriptions_at_start"] == 3 and december["churn_rate"] == "0.0000"
    assert december["mrr_recurring"] == "197.00" and december["active_subscriptions"] == 3
    # December's run bills November's usage: S1 22 x 1.20 = 26.40, S2's 7
    # montages after the upgrade 8.40; (26.40 + 8.40 + 33.60 + 0.00) / 3.
    assert (december["usage_charges"], december["mrr_usage"]) == ("34.80", "22.80")

    # Lambda hands batches again (a timeout after the writes, a retry):
    # every record comes back, each finds its marker and adds nothing.
    from app import report_feed

    for start in range(0, len(feed.delivered), 50):
        result = report_feed({"Records": feed.delivered[start:start + 50]}, LocalContext())
        assert result == {"batchItemFailures": []}
    assert summary(merchant, "2026-11")["currencies"]["EUR"] == NOVEMBER

    # Another merchant sees none of it.
    other = new_merchant(name="Autre", invoice_prefix="AU")
    assert other.get("/reports/summary?month=2026-11").json["currencies"] == {}
    assert other.get("/reports/usage?meter=montages&from=2026-11-01&to=2026-11-30").json["data"] == []
    assert merchant.as_key(None).get("/reports/summary?month=2026-11").status == 401


def test_a_failed_record_is_retried_from_where_it_failed(merchant, clock, feed, monkeypatch):
    from app import report_feed
    from chalicelib.store import reports as report_store

    customer = new_customer(merchant, card=None)
    offer = simple_offer(merchant)
    subscribe(merchant, customer, offer, start_at=iso(OCT_1))
    records = feed.read()
    calls = []
    original = report_store.add_figures

    def flaky(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 1:
            raise RuntimeError("TransactionConflict")
        return original(*args, **kwargs)

    monkeypatch.setattr(report_store, "add_figures", flaky)
    first = report_feed({"Records": records}, LocalContext())
    [failure] = first["batchItemFailures"]
    position = [r["dynamodb"]["SequenceNumber"] for r in records].index(failure["itemIdentifier"])
    assert report_feed({"Records": records[position:]}, LocalContext()) == {"batchItemFailures": []}
    assert summary(merchant, "2026-10")["currencies"]["EUR"]["new_subscriptions"] == 1


def test_a_yearly_fee_canceled_and_subscribed_again_keeps_the_feed_flowing(merchant, clock, feed):
    """100.00 a year is 8.333.. a month of recurring fees. Subscribed, then
    canceled at once (the stock back to zero), then subscribed again: the
    feed counts every change (a stock summed back to zero with 28 decimals
    was written in a form the next ADD could not read) and the recurring
    stock is exactly one subscription's, rounded to the cent: 8.33."""
    yearly = simple_offer(merchant, code="yearly", base="100.00", billing_interval="year")
    first = subscribe(merchant, new_customer(merchant), yearly, start_at=iso(OCT_1))
    assert merchant.post(f"/subscriptions/{first['id']}/cancel", {"at_period_end": False}).status == 200
    subscribe(merchant, new_customer(merchant, name="Labo Bis"), yearly, start_at=iso(OCT_1))
    deliver(feed)
    eur = summary(merchant, "2026-10")["currencies"]["EUR"]
    assert (eur["new_subscriptions"], eur["active_subscriptions"], eur["mrr"]) == (2, 1, "8.33")


@pytest.mark.parametrize("query, param", [
    ("/reports/summary", "month"),
    ("/reports/summary?month=2026-13", "month"),
    ("/reports/summary?month=26-10", "month"),
    ("/reports/usage?from=2026-11-01&to=2026-11-30", "meter"),
    ("/reports/usage?meter=montages&from=2026-11-31&to=2026-12-01", "from"),
    ("/reports/usage?meter=montages&from=2026-11-01", "to"),
    ("/reports/usage?meter=montages&from=2026-11-02&to=2026-11-01", "to"),
    ("/reports/usage?meter=montages&from=2026-01-01&to=2027-06-01", "to"),
    ("/reports/usage?meter=montages&from=2026-11-01&to=2026-11-30&group_by=week", "group_by"),
])
def test_bad_queries_are_400_naming_the_field(merchant, query, param):
    response = merchant.get(query)
    assert response.status == 400, response
    assert response.json["error"]["param"] == param


def export(client, merchant, month: str, *, gzipped: bool) -> list[dict]:
    headers = {"Authorization": f"Bearer {merchant.key}", "Accept": "text/csv"}
    if gzipped:
        headers["Accept-Encoding"] = "gzip, deflate"
    response = client.http.get(f"/exports/invoices.csv?month={month}", headers=headers)
    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"].startswith("text/csv")
    body = response.body
    if gzipped:
        assert response.headers["Content-Encoding"] == "gzip"
        body = gzip.decompress(body)
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))


def test_usage_statistics_and_the_accounting_export(client, merchant, known_months):
    s1, s2, s3 = known_months["S1"], known_months["S2"], known_months["S3"]
    by_day = merchant.get("/reports/usage?meter=montages&from=2026-11-01&to=2026-11-30&group_by=day")
    assert by_day.status == 200, by_day
    days = {row["day"]: (row["quantity"], {s["subscription_id"]: s["quantity"] for s in row["subscriptions"]})
            for row in by_day.json["data"]}
    assert days == {
        "2026-11-05": ("5", {s2: "5"}),
        "2026-11-08": ("3", {s3: "3"}),
        "2026-11-10": ("10", {s1: "10"}),
        "2026-11-25": ("7", {s2: "7"}),
        "2026-11-29": ("12", {s1: "12"}),  # the device's reading (the baseline counts nothing)
    }
    by_month = merchant.get("/reports/usage?meter=montages&from=2026-10&to=2026-11&group_by=month")
    assert [(row["month"], row["quantity"]) for row in by_month.json["data"]] == [("2026-10", "20"), ("2026-11", "37")]
    [november] = [row for row in by_month.json["data"] if row["month"] == "2026-11"]
    assert {s["subscription_id"]: s["quantity"] for s in november["subscriptions"]} == {s1: "22", s2: "12", s3: "3"}

    # The accounting export of November, read back with the csv module.
    rows = export(client, merchant, "2026-11", gzipped=True)
    assert rows == export(client, merchant, "2026-11", gzipped=False)
    numbers = sorted({row["invoice_number"] for row in rows})
    # November: the three renewals, S4's first, the upgrade and the cancellation.
    assert len(numbers) == 6
    net = sum(Decimal(row["net_amount"]) for row in rows)
    vat = sum(Decimal(row["vat_amount"]) for row in rows)
    gross = sum(Decimal(row["gross_amount"]) for row in rows)
    assert (net, vat, gross) == (Decimal("236.60"), Decimal("47.32"), Decimal("283.92"))  # gross = invoiced
    assert {row["currency"] for row in rows} == {"EUR"} and {row["vat_rate"] for row in rows} == {"20.0"}
    # Each invoice's lines add up to its invoice, VAT included (rounded once per invoice).
    for number in numbers:
        lines = [row for row in rows if row["invoice_number"] == number]
        invoice = merchant.get(f"/invoices/{lines[0]['invoice_id']}").json
        assert sum(Decimal(r["net_amount"]) for r in lines) == Decimal(invoice["subtotal"])
        assert sum(Decimal(r["vat_amount"]) for r in lines) == Decimal(invoice["tax"][0]["amount"])
        assert [r["kind"] for r in lines] == [line["kind"] for line in invoice["lines"]]
    accounts = {(row["kind"], row["account_code"]) for row in rows}
    # The accounts the journal credits (domain/ledger.py), the merchant's own when it set them.
    assert accounts == {("fee", "706000"), ("usage", "706000"), ("proration", "706000")}
    assert merchant.patch("/merchant", {"accounts": {"revenue": "706100"}}).status == 200
    assert {row["account_code"] for row in export(client, merchant, "2026-11", gzipped=False)} == {"706100"}
    upgrade = [row for row in rows if row["kind"] == "proration" and row["net_amount"] == "-22.87"]
    assert len(upgrade) == 1 and upgrade[0]["customer_name"] == "Client S2"
    # October holds the three first invoices only.
    october = export(client, merchant, "2026-10", gzipped=True)
    assert sum(Decimal(row["gross_amount"]) for row in october) == Decimal("176.40")


def test_the_export_refuses_a_bad_month_and_a_client_that_does_not_take_csv(client, merchant):
    headers = {"Authorization": f"Bearer {merchant.key}", "Accept": "text/csv"}
    response = merchant.get("/exports/invoices.csv?month=2026-1", headers={"Accept": "text/csv"})
    assert response.status == 400 and response.json["error"]["param"] == "month"
    refused = merchant.get("/exports/invoices.csv?month=2026-11", headers={"Accept": "application/json"})
    assert refused.status == 400 and refused.json["error"]["param"] == "Accept"
    empty = client.http.get("/exports/invoices.csv?month=2026-11", headers=headers)
    assert empty.status_code == 200 and empty.body.decode().count("\n") == 1  # the header only


def test_every_state_change_is_published_for_erps(merchant, clock, published):
    """What docs/events.md lists beyond invoices and subscriptions (those are
    checked by tests/integration/test_billing.py and test_subscriptions.py)."""
    offer = simple_offer(merchant, code="basic")
    later = (OCT_1 + timedelta(days=40)).isoformat().replace("+00:00", "Z")
    assert merchant.post(f"/offers/{offer}/versions", {
        "effective_from": later, "components": [
            {"code": "base", "type": "flat", "amount": "59.00"},
            {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"}],
        "options": [{"code": "express", "name": "4h on-site", "amount": "30.00"}]}).status == 201
    customer = new_customer(merchant)  # with a card
    sub = subscribe(merchant, customer, offer, start_at=iso(OCT_1))["id"]
    assert merchant.post("/devices", {"device_id": "neksia-0042", "subscription_id": sub}).status == 201
    assert merchant.post("/devices", {"device_id": "neksia-0042", "subscription_id": sub}).status in (200, 201)
    record_usage(merchant, sub, clock.now(), montages="3")
    assert merchant.post(f"/offers/{offer}/archive").status == 200
    assert merchant.post(f"/offers/{offer}/archive").status == 200

    [created] = published.of_type("offer.created")
    assert created["offer"]["id"] == offer and created["merchant_id"] == merchant.merchant["id"]
    [version] = published.of_type("offer.version_created")
    assert version["offer"]["id"] == offer
    assert len(published.of_type("offer.archived")) == 1  # archiving twice is one change
    [card] = published.of_type("customer.payment_method_attached")
    assert card["customer_id"] == customer and card["payment_method"]["last4"] == "4242"
    [attached] = published.of_type("device.attached")  # attaching it again changes nothing
    assert attached["subscription_id"] == sub and attached["moved"] is False
    [usage] = published.of_type("usage.recorded")
    assert [(e["subscription_id"], e["meter"], e["quantity"]) for e in usage["events"]] == [(sub, "montages", "3")]
