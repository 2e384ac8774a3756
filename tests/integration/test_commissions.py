"""Resellers, commissions and royalties end to end (moto + localstripe): a
reseller earning 20% for 3 months then 10%, a licensor 0.05 per montage,
invoices paid and one refunded, the events carried from the bus by
CommissionRule to the commission queue and its consumer, the statements
checked line by line, issued (numbered, e-mailed, PDF and CSV) and paid;
a reseller's key kept to its own customers; and no accrual ever doubled
by redelivered events or concurrent workers."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3
import pytest

from chalicelib import jobs
from tests.integration.test_alerts import drain as drain_notifications
from tests.integration.test_alerts import mails_to
from tests.integration.test_billing import atomic_dynamodb  # noqa: F401  (fixture)
from tests.integration.test_billing import (
    DEC_1, NOV_1, invoices_of, iso, new_customer, record_usage, simple_offer, subscribe,
)
from tests.integration.domain_events import published  # noqa: F401  (fixture)
from tests.integration.test_concurrency import run_threads

UTC = timezone.utc
JAN_1 = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
FEB_1 = datetime(2027, 1, 31, 23, 0, tzinfo=UTC)
RESELLER = {"kind": "reseller", "name": "Réseau Vision", "email": "compta@reseau-vision.fr",
            "rules": [{"percent": "20", "first_months": 3, "then_percent": "10"}]}
LICENSOR = {"kind": "licensor", "name": "Neksia Labs", "email": "royalties@neksia.example",
            "rules": [{"applies_to": {"components": ["montage"]}, "per_unit": "0.05"}]}


@pytest.fixture
def clock_start():
    return NOV_1


@pytest.fixture
def feed(aws):
    """Carry what the backend wrote to the commission queue's consumer, as
    AWS would: the table's stream to the domain events' feed (where events
    are derived from it), the bus's CommissionRule to CommissionQueue (moto),
    the queue to `commission_feed`."""
    import app
    from infra.local.lambda_events import drain_once
    from tests.integration.table_stream import billing_table_stream

    from tests.integration.aws_permissions import FunctionPolicy, record_aws_calls

    stream = billing_table_stream() if "change_feed" in app.app.handler_map else None
    url = boto3.client("sqs", region_name="eu-west-1").get_queue_url(QueueName="CommissionQueue")["QueueUrl"]
    policy, refused = FunctionPolicy("commission_feed", aws), []

    def commission_feed(event, context=None):
        """The consumer, every AWS call it makes checked against its policy."""
        with record_aws_calls() as calls:
            try:
                return app.app.handler_map["commission_feed"](event, context)
            finally:
                refused.extend(str(call) for call in calls if not policy.allows(call))

    def drain() -> int:
        if stream is not None:
            stream.deliver(app.app.handler_map["change_feed"])
        handled = 0
        while n := drain_once(url, commission_feed):
            handled += n
        assert refused == [], "commission_feed's policy does not allow what it does"
        return handled

    return drain


def payee(api, body) -> dict:
    response = api.post("/payees", body)
    assert response.status == 201, response
    return response.json


def statement(api, payee_id, month) -> dict:
    response = api.get(f"/payees/{payee_id}/statements?month={month}")
    assert response.status == 200, response
    return response.json


def lines_of(found: dict) -> list[tuple]:
    return [(line["kind"], line["invoice_number"], line["description"].split(" (")[0], line["base_amount"],
             line["amount"]) for line in found["lines"]]


def bill_at(clock, moment):
    clock.set(moment + timedelta(minutes=5))
    jobs.billing_scheduler(clock.now(), inline=True)


def test_a_reseller_and_a_licensor_accrue_are_reversed_and_get_their_statements(merchant, clock, feed, published):
    reseller = payee(merchant, RESELLER)
    licensor = payee(merchant, LICENSOR)
    offer_id = simple_offer(merchant, code="clico")
    customer_id = new_customer(merchant, reseller_id=reseller["id"])
    assert merchant.get(f"/customers/{customer_id}").json["reseller_id"] == reseller["id"]
    sub = subscribe(merchant, customer_id, offer_id, start_at=iso(NOV_1))
    clock.set(datetime(2026, 11, 20, 9, tzinfo=UTC))
    record_usage(merchant, sub["id"], datetime(2026, 11, 12, 9, tzinfo=UTC), montages="100")
    bill_at(clock, DEC_1)   # November's 100 montages, December's fee
    bill_at(clock, JAN_1)   # January's fee, month 2: still 20%
    bill_at(clock, FEB_1)   # February's fee, month 3: 10%
    invoices = invoices_of(merchant, sub["id"])
    assert [i["status"] for i in invoices] == ["paid"] * 4
    first, december, january, february = invoices
    # December's montages refunded to the card.
    [montage_line] = [line for line in december["lines"] if line["component"] == "montage"]
    assert montage_line["amount"] == "120.00"
    clock.set(datetime(2027, 2, 3, 10, tzinfo=UTC))
    refund = merchant.post(f"/invoices/{december['id']}/credit-notes", {
        "lines": [{"invoice_line_id": montage_line["id"], "amount": "120.00"}], "reason": "product_unsatisfactory",
        "refund": "card"})
    assert refund.status == 201, refund
    assert feed() >= 5

    november = statement(merchant, reseller["id"], "2026-11")
    assert (november["status"], november["total"], november["currency"]) == ("draft", "9.80", "EUR")
    assert [(k, n, b, a) for k, n, _, b, a in lines_of(november)] == [("accrual", first["number"], "49.00", "9.80")]
    assert november["lines"][0]["parts"] == [{"rule": 0, "basis": "percent", "base": "49.00", "rate": "20"}]
    dec = statement(merchant, reseller["id"], "2026-12")
    assert sorted((l["kind"], l["base_amount"], l["amount"]) for l in dec["lines"]) == [
        ("accrual", "120.00", "24.00"), ("accrual", "49.00", "9.80")]
    assert dec["total"] == "33.80" and dec["invoices"] == [
        {"invoice_id": december["id"], "invoice_number": december["number"], "currency": "EUR", "total": "33.80"}]
    assert statement(merchant, reseller["id"], "2027-01")["total"] == "9.80"
    feb = statement(merchant, reseller["id"], "2027-02")
    # February: the fee of month 3 at 10%, and the refund of December's montages reversed.
    assert sorted((l["kind"], l["invoice_number"], l["amount"]) for l in feb["lines"]) == [
        ("accrual", february["number"], "4.90"), ("reversal", december["number"], "-24.00")]
    assert feb["total"] == "-19.10"
    [reversal] = [l for l in feb["lines"] if l["kind"] == "reversal"]
    assert reversal["credit_note_number"] == refund.json["number"] and reversal["invoice_line_id"] == montage_line["id"]

    royalties = statement(merchant, licensor["id"], "2026-12")
    assert [(l["kind"], l["base_amount"], l["parts"], l["amount"]) for l in royalties["lines"]] == [
        ("accrual", "120.00", [{"rule": 0, "basis": "per_unit", "base": "100", "rate": "0.05"}], "5.00")]
    assert statement(merchant, licensor["id"], "2027-02")["total"] == "-5.00"
    assert statement(merchant, licensor["id"], "2026-11")["lines"] == []

    # Redelivered events book nothing more.
    from chalicelib.services import commissions

    again = commissions.accrue_for_event({"detail-type": "invoice.paid", "id": "evt-again", "detail": {
        "merchant_id": merchant.merchant["id"], "invoice": {"id": december["id"]}}})
    assert again["booked"] == 0 and again["already"] == 5  # 3 accruals, 2 reversals
    assert statement(merchant, reseller["id"], "2026-12")["total"] == "33.80"

    # Issued: numbered, e-mailed, fixed; then paid.
    issued = merchant.post(f"/payees/{reseller['id']}/statements/2026-12/issue", {})
    assert issued.status == 200, issued
    assert (issued.json["status"], issued.json["number"], issued.json["total"]) == ("issued", "ODST2027-000001",
                                                                                   "33.80")
    second = merchant.post(f"/payees/{licensor['id']}/statements/2026-12/issue", {}).json
    assert second["number"] == "ODST2027-000002" and second["total"] == "5.00"
    assert merchant.post(f"/payees/{reseller['id']}/statements/2026-12/issue", {}).json["number"] == "ODST2027-000001"
    drain_notifications()
    [mail] = mails_to("compta@reseau-vision.fr")
    assert "ODST2027-000001" in mail["subject"] and "33,80" in mail["text"]
    assert merchant.post(f"/payees/{reseller['id']}/statements/2027-03/issue", {}).json["error"]["code"] == \
        "month_not_over"
    paid = merchant.post(f"/payees/{reseller['id']}/statements/2026-12/paid", {"reference": "VIR-2027-0042"})
    assert (paid.json["status"], paid.json["reference"]) == ("paid", "VIR-2027-0042")
    assert merchant.post(f"/payees/{reseller['id']}/statements/2026-11/paid", {"reference": "x"}).status == 409
    feed()
    [issued_event] = [e for e in published.of_type("statement.issued") if e["statement"]["payee_id"] == reseller["id"]]
    assert issued_event["statement"]["number"] == "ODST2027-000001" and issued_event["merchant_id"] == \
        merchant.merchant["id"]
    [paid_event] = published.of_type("statement.paid")
    assert paid_event["statement"]["reference"] == "VIR-2027-0042"

    pdf = merchant.get(f"/payees/{reseller['id']}/statements/2026-12/pdf", headers={"Accept": "application/pdf"})
    assert pdf.status == 200 and pdf.headers["Content-Type"] == "application/pdf"
    csv_text = merchant.get(f"/payees/{reseller['id']}/statements/2026-12/csv", headers={"Accept": "text/csv"})
    assert csv_text.status == 200
    body = csv_text.json if isinstance(csv_text.json, str) else csv_text.json.decode()
    rows = body.strip().splitlines()
    assert rows[0].startswith("statement,month,payee_id,kind") and len(rows) == 4
    assert rows[-1].endswith(",33.80,EUR")


def test_an_accrual_for_an_issued_month_goes_to_the_next(merchant, clock, feed):
    from chalicelib.services import commissions

    reseller = payee(merchant, RESELLER)
    customer_id = new_customer(merchant, reseller_id=reseller["id"])
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    clock.set(DEC_1 + timedelta(hours=1))
    # November issued before its event was heard (the feed was late).
    assert merchant.post(f"/payees/{reseller['id']}/statements/2026-11/issue", {}).json["total"] is None
    feed()
    [first] = invoices_of(merchant, sub["id"])
    assert statement(merchant, reseller["id"], "2026-11")["lines"] == []
    assert [l["amount"] for l in statement(merchant, reseller["id"], "2026-12")["lines"]] == ["9.80"]
    assert commissions.accrue_invoice(merchant.merchant["id"], first["id"])["booked"] == 0


def test_concurrent_workers_and_redelivered_events_never_double_an_accrual(merchant, clock, feed, atomic_dynamodb):
    from chalicelib.services import commissions

    reseller = payee(merchant, RESELLER)
    payee(merchant, LICENSOR)
    customer_id = new_customer(merchant, reseller_id=reseller["id"])
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    clock.set(datetime(2026, 11, 20, 9, tzinfo=UTC))
    record_usage(merchant, sub["id"], datetime(2026, 11, 12, 9, tzinfo=UTC), montages="10")
    bill_at(clock, DEC_1)
    invoices = invoices_of(merchant, sub["id"])
    events = [{"detail-type": "invoice.paid", "id": f"evt-{n}", "detail": {
        "merchant_id": merchant.merchant["id"], "invoice": {"id": invoice["id"]}}}
        for n in range(4) for invoice in invoices]
    run_threads(commissions.accrue_for_event, [(event,) for event in events])
    feed()  # and the bus's own deliveries on top
    assert [l["amount"] for l in statement(merchant, reseller["id"], "2026-11")["lines"]] == ["9.80"]
    assert sorted(l["amount"] for l in statement(merchant, reseller["id"], "2026-12")["lines"]) == ["2.40", "9.80"]


def test_payee_rules_are_checked_field_by_field(merchant, clock):
    bad = {**RESELLER, "rules": [{"percent": "20", "per_unit": "0.05"}]}
    assert merchant.post("/payees", bad).json["error"]["param"] == "rules[0].per_unit"
    bad = {**RESELLER, "rules": [{"percent": "120"}]}
    assert merchant.post("/payees", bad).json["error"]["param"] == "rules[0].percent"
    bad = {**RESELLER, "rules": [{"percent": 20}]}
    assert merchant.post("/payees", bad).json["error"]["param"] == "rules[0].percent"
    bad = {**RESELLER, "rules": [{"then_percent": "10", "percent": "20"}]}
    assert merchant.post("/payees", bad).json["error"]["param"] == "rules[0].first_months"
    bad = {**RESELLER, "rules": [{"applies_to": {"offers": ["x"]}, "percent": "1"}]}
    assert merchant.post("/payees", bad).json["error"]["param"] == "rules[0].applies_to.offers"
    assert merchant.post("/payees", {**RESELLER, "kind": "agent"}).json["error"]["param"] == "kind"
    licensor = payee(merchant, LICENSOR)
    assert merchant.post("/customers", {"name": "X", "email": "x@x.fr", "country": "FR",
                                        "reseller_id": licensor["id"]}).json["error"]["param"] == "reseller_id"
    assert merchant.get(f"/payees/{licensor['id']}/statements").json["month"] == "2026-11"  # the current one
    assert merchant.get(f"/payees/{licensor['id']}/statements?month=2026-13").json["error"]["param"] == "month"
    assert merchant.post(f"/payees/{licensor['id']}/api-keys", {}).status == 400
    listed = merchant.get("/payees").json["data"]
    assert [p["id"] for p in listed] == [licensor["id"]]


def test_a_reseller_key_sees_and_makes_only_its_own_customers(merchant, new_merchant, clock):
    one, two = payee(merchant, RESELLER), payee(merchant, {**RESELLER, "name": "Optic Partners"})
    key = merchant.post(f"/payees/{one['id']}/api-keys", {})
    assert key.status == 201 and key.json["api_key"].startswith("sk_")
    assert [k["prefix"] for k in merchant.get(f"/payees/{one['id']}").json["api_keys"]] == [key.json["prefix"]]
    other_key = merchant.post(f"/payees/{two['id']}/api-keys", {}).json["api_key"]
    mine, theirs = merchant.as_key(key.json["api_key"]), merchant.as_key(other_key)
    offer_id = simple_offer(merchant)

    made = mine.post("/customers", {"name": "Labo Ouest", "email": "ouest@labo.fr", "country": "FR"})
    assert made.status == 201 and made.json["reseller_id"] == one["id"]
    ours = made.json["id"]
    foreign = theirs.post("/customers", {"name": "Labo Est", "email": "est@labo.fr", "country": "FR"}).json["id"]
    direct = new_customer(merchant, card=None, name="Labo Direct")
    assert mine.post("/customers", {"name": "Y", "email": "y@y.fr", "country": "FR",
                                    "reseller_id": two["id"]}).json["error"]["param"] == "reseller_id"

    assert [c["id"] for c in mine.get("/customers").json["data"]] == [ours]
    assert mine.get(f"/customers?email=est@labo.fr").json["data"] == []
    for customer_id in (foreign, direct):
        refused = mine.get(f"/customers/{customer_id}")
        assert (refused.status, refused.json["error"]["code"]) == (404, "not_found")
        assert mine.post("/subscriptions", {"customer_id": customer_id, "offer_id": offer_id}).status == 404
        assert mine.get(f"/subscriptions?customer_id={customer_id}").status == 404
    assert mine.get(f"/customers/{ours}").status == 200
    sub = mine.post("/subscriptions", {"customer_id": ours, "offer_id": offer_id})
    assert sub.status == 201, sub
    assert mine.get(f"/subscriptions/{sub.json['id']}").status == 200
    assert [s["id"] for s in mine.get(f"/subscriptions?customer_id={ours}").json["data"]] == [sub.json["id"]]
    assert theirs.get(f"/subscriptions/{sub.json['id']}").status == 404
    # The merchant sees everything; the reseller nothing else.
    assert merchant.get(f"/customers/{foreign}").status == 200
    for method, path in (("GET", "/offers"), ("GET", "/invoices"), ("GET", "/merchant"), ("GET", "/payees"),
                         ("POST", f"/subscriptions/{sub.json['id']}/cancel"), ("PATCH", f"/customers/{ours}")):
        refused = mine.request(method, path, {})
        assert (refused.status, refused.json["error"]["code"]) == (403, "reseller_key"), (method, path)
    # Another merchant's reseller key sees none of this merchant's customers.
    other = new_merchant(name="Autre")
    outsider = payee(other, RESELLER)
    outsider_key = other.as_key(other.post(f"/payees/{outsider['id']}/api-keys", {}).json["api_key"])
    assert outsider_key.get("/customers").json["data"] == []
    assert outsider_key.get(f"/customers/{ours}").status == 404
    # Revoked: refused at once.
    assert merchant.delete(f"/payees/{one['id']}/api-keys/{key.json['prefix']}").json["deleted"] is True
    assert mine.get("/customers").status == 401
    assert merchant.get(f"/payees/{one['id']}").json["api_keys"] == []
    assert merchant.delete(f"/payees/{one['id']}/api-keys/{key.json['prefix']}").status == 404
