"""Seven billing behaviours on the local stage, over HTTP, as a merchant sees
them: the first invoice issued with the subscription and paid by the card
saved afterwards, a void that takes no money, no second charge, late usage
after a cancellation, a cancellation just after a period boundary, and
proration in whole UTC days in a month a daylight-saving change shortens.

The stage is shared and its clock only moves forward: each test has its own
merchant, and its times are read from the stage (its clock, the periods the
API answers). Amounts are worked by hand in the comments; where they depend
on the length of a period the stage chose, the hand formula is written out."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

import stripe

from tests.e2e.test_billing import confirm_card, page_config

DAY = timedelta(days=1)
TICK = timedelta(minutes=15)  # the billing job's schedule (multiples of 15 minutes since the epoch)


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def stripe_client(stage) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_local", base_addresses={"api": f"http://127.0.0.1:{stage.ports['stripe']}"})


def stage_now(operator) -> datetime:
    return instant(operator.get("/_local/clock").json()["now"])


def move_clock(operator, when: datetime) -> dict:
    moved = operator.post("/_local/clock", json={"now": iso(when)})
    assert moved.status_code == 200, moved.text
    return moved.json()


def new_offer(merchant, *components, code="clico-neksia") -> str:
    offer = merchant.post("/offers", json={"code": code, "name": "Clic&O Neksia", "currency": "EUR",
                                           "billing_interval": "month", "components": list(components)})
    assert offer.status_code == 201, offer.text
    return offer.json()["id"]


BASE = {"code": "base", "type": "flat", "amount": "31.00"}
MONTAGE = {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"}


def new_customer(merchant) -> str:
    customer = merchant.post("/customers", json={"name": "Labo Martin", "email": "compta@labo-martin.fr",
                                                 "country": "FR", "locale": "fr"})
    assert customer.status_code == 201, customer.text
    return customer.json()["id"]


def save_card(stage, merchant, customer_id: str) -> str:
    """The payment page's server path (Stripe.js's confirmation done at localstripe): the Stripe customer id."""
    token = merchant.post(f"/customers/{customer_id}/payment-link").json()["url"].rsplit("/pay/", 1)[1]
    public = merchant.as_key(None)
    setup_intent = confirm_card(stage, page_config(public.get(f"/pay/{token}").text)["clientSecret"])
    done = public.post(f"/pay/{token}/complete", json={"setup_intent": setup_intent})
    assert done.status_code == 200, done.text
    return stripe_client(stage).v1.setup_intents.retrieve(setup_intent)["customer"]


def subscribe(merchant, customer_id: str, offer_id: str, **fields) -> dict:
    created = merchant.post("/subscriptions", json={"customer_id": customer_id, "offer_id": offer_id, **fields})
    assert created.status_code == 201, created.text
    return created.json()


def invoices_of(merchant, subscription_id: str) -> list[dict]:
    """The subscription's invoices, newest first."""
    return merchant.get("/invoices", params={"subscription_id": subscription_id}).json()["data"]


def payment_intents(stage, stripe_customer: str) -> list[dict]:
    return list(stripe_client(stage).v1.payment_intents.list(params={"customer": stripe_customer}).data)


def cancel_now(merchant, subscription_id: str) -> dict:
    canceled = merchant.post(f"/subscriptions/{subscription_id}/cancel", json={"at_period_end": False})
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    return canceled.json()


def prorated(amount: str, start: datetime, end: datetime, at: datetime) -> Decimal:
    """The contract's formula, by hand: amount x floor((end - at) / 1 day) / round((end - start) / 1 day)."""
    remaining = (end - at) // DAY
    days = round((end - start) / DAY)
    return (Decimal(amount) * remaining / days).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def test_the_first_invoice_is_issued_at_once_and_paid_within_seconds_by_the_card_saved_afterwards(stage, new_merchant):
    merchant = new_merchant(invoice_prefix="RG1")
    customer_id = new_customer(merchant)
    subscription = subscribe(merchant, customer_id, new_offer(merchant, BASE))
    assert subscription["status"] == "incomplete"
    # Issued with the subscription, no run: 31.00 + VAT 20% 6.20 = 37.20 due.
    [first] = invoices_of(merchant, subscription["id"])
    assert (first["billing_reason"], first["status"], first["amount_due"]) == ("subscription_create", "open", "37.20")

    stripe_customer = save_card(stage, merchant, customer_id)
    deadline = time.monotonic() + 10  # no clock move, no billing run: seconds
    while merchant.get(f"/invoices/{first['id']}").json()["status"] != "paid":
        assert time.monotonic() < deadline, "the saved card did not pay the first invoice"
        time.sleep(0.25)
    paid = merchant.get(f"/invoices/{first['id']}").json()
    assert (paid["amount_paid"], paid["amount_due"]) == ("37.20", "0.00")
    # At the issue, with no card, an attempt that charged nothing; then the new card's charge.
    assert [(a["status"], a["failure_code"], bool(a["payment_intent"])) for a in paid["payment_attempts"]] == [
        ("failed", "no_payment_method", False), ("succeeded", None, True)]
    [intent] = payment_intents(stage, stripe_customer)
    assert (intent["id"], intent["status"], intent["amount"]) == (
        paid["payment_attempts"][1]["payment_intent"], "succeeded", 3720)
    assert merchant.get(f"/subscriptions/{subscription['id']}").json()["status"] == "active"


def test_cancelling_now_before_the_first_payment_voids_the_invoice_and_a_later_card_charges_nothing(
        stage, new_merchant):
    merchant = new_merchant(invoice_prefix="RG2")
    customer_id = new_customer(merchant)
    subscription = subscribe(merchant, customer_id, new_offer(merchant, BASE))
    [first] = invoices_of(merchant, subscription["id"])
    assert (first["status"], first["amount_due"]) == ("open", "37.20")

    cancel_now(merchant, subscription["id"])
    [voided] = invoices_of(merchant, subscription["id"])  # no cancellation invoice: nothing was used or paid
    assert (voided["id"], voided["status"], voided["amount_paid"]) == (first["id"], "void", "0.00")

    stripe_customer = save_card(stage, merchant, customer_id)
    time.sleep(2)  # the setup_intent.succeeded webhook charges open invoices too: let it arrive
    assert [i for i in payment_intents(stage, stripe_customer) if i["status"] == "succeeded"] == []
    page = merchant.get(f"/customers/{customer_id}").json()
    shown = [(i["id"], i["status"], i["amount_paid"]) for i in page["latest_invoices"]]
    assert shown == [(first["id"], "void", "0.00")]
    assert merchant.get("/invoices", params={"customer_id": customer_id, "status": "open"}).json()["data"] == []
    assert page["credit_balance"] == "0.00"
    assert not any(Decimal(v) for v in (page["credit_balances"] or {}).values())


def test_paying_a_paid_invoice_again_is_refused_and_makes_no_second_payment_intent(stage, new_merchant):
    merchant = new_merchant(invoice_prefix="RG3")
    customer_id = new_customer(merchant)
    stripe_customer = save_card(stage, merchant, customer_id)
    subscription = subscribe(merchant, customer_id, new_offer(merchant, BASE))
    [invoice] = invoices_of(merchant, subscription["id"])
    assert (invoice["status"], invoice["amount_paid"]) == ("paid", "37.20")

    answers = [merchant.post(f"/invoices/{invoice['id']}/pay") for _ in range(2)]
    assert [a.status_code for a in answers] == [409, 409], answers[0].text
    save_card(stage, merchant, customer_id)  # a new card charges the customer's open invoices: none
    time.sleep(1)  # and so does its webhook
    [intent] = payment_intents(stage, stripe_customer)
    assert (intent["id"], intent["status"], intent["amount"]) == (
        invoice["payment_attempts"][0]["payment_intent"], "succeeded", 3720)
    shown = merchant.get(f"/invoices/{invoice['id']}").json()
    assert (shown["status"], shown["amount_paid"], len(shown["payment_attempts"])) == ("paid", "37.20", 1)


def test_voiding_a_paid_invoice_is_refused_with_a_credit_note_suggested(stage, new_merchant):
    merchant = new_merchant(invoice_prefix="RG4")
    customer_id = new_customer(merchant)
    save_card(stage, merchant, customer_id)
    [paid] = invoices_of(merchant, subscribe(merchant, customer_id, new_offer(merchant, BASE))["id"])
    assert (paid["status"], paid["amount_paid"]) == ("paid", "37.20")
    refused = merchant.post(f"/invoices/{paid['id']}/void")
    assert refused.status_code == 409, refused.text
    assert merchant.get(f"/invoices/{paid['id']}").json()["status"] == "paid"
    assert "credit note" in refused.json()["error"]["message"], refused.text


def test_a_void_invoice_takes_no_money(stage, new_merchant):
    merchant = new_merchant(invoice_prefix="RG4")
    customer_id = new_customer(merchant)
    subscription = subscribe(merchant, customer_id, new_offer(merchant, BASE))
    [due] = invoices_of(merchant, subscription["id"])
    voided = merchant.post(f"/invoices/{due['id']}/void")
    assert voided.status_code == 200, voided.text
    assert voided.json()["status"] == "void"
    pay = merchant.post(f"/invoices/{due['id']}/pay")
    assert pay.status_code == 409, pay.text
    stripe_customer = save_card(stage, merchant, customer_id)  # a new card charges open invoices: not this one
    time.sleep(1)  # nor does its webhook
    assert payment_intents(stage, stripe_customer) == []
    shown = merchant.get(f"/invoices/{due['id']}").json()
    assert (shown["status"], shown["amount_paid"]) == ("void", "0.00")
    assert [a["payment_intent"] for a in shown["payment_attempts"]] == [None]  # the no-card attempt at the issue
    assert merchant.get(f"/subscriptions/{subscription['id']}").json()["status"] == "incomplete"


def test_usage_reported_after_an_immediate_cancel_for_a_time_before_it_reaches_a_last_invoice(
        stage, operator, new_merchant):
    merchant = new_merchant(invoice_prefix="RG5")
    customer_id = new_customer(merchant)
    save_card(stage, merchant, customer_id)
    subscription = subscribe(merchant, customer_id, new_offer(merchant, MONTAGE, code="per-act"))
    assert subscription["status"] == "active"  # usage only: nothing due at the start
    sub_id, start = subscription["id"], subscription["current_period_start"]

    def usage(event_id, quantity, timestamp):
        return merchant.post("/usage", json={"events": [{"event_id": event_id, "subscription_id": sub_id,
                                                         "meter": "montages", "quantity": quantity,
                                                         "timestamp": timestamp}]})

    assert usage("rg5-1", "10", start).status_code == 200
    canceled = cancel_now(merchant, sub_id)
    [at_cancel] = invoices_of(merchant, sub_id)
    # The usage so far: 10 x 1.20 = 12.00, VAT 2.40: 14.40.
    assert (at_cancel["status"], at_cancel["subtotal"], at_cancel["total"]) == ("paid", "12.00", "14.40")

    # A montage counted before the cancellation, reported after it.
    before_cancel = instant(start) + (instant(canceled["canceled_at"]) - instant(start)) / 2
    late = usage("rg5-2", "7", iso(before_cancel))
    assert late.status_code == 200, late.text
    assert late.json() == {"accepted": 1, "duplicates": 0}
    after = usage("rg5-3", "1", iso(instant(canceled["canceled_at"]) + timedelta(seconds=1)))
    assert after.status_code == 400, after.text
    assert after.json()["error"]["param"] == "events[0].timestamp"

    move_clock(operator, stage_now(operator) + TICK + timedelta(minutes=1))
    invoices = invoices_of(merchant, sub_id)
    assert [(i["id"], i["billing_reason"]) for i in invoices][1:] == [(at_cancel["id"], at_cancel["billing_reason"])]
    last = invoices[0]
    assert last["billing_reason"] == "late_usage"  # the rejected event billed nothing
    # Exactly the late 7 montages: 7 x 1.20 = 8.40, VAT 1.68: 10.08, charged on the card.
    assert [(ln["kind"], ln["component"], ln["quantity"], ln["amount"])
            for ln in last["lines"]] == [("usage", "montage", "7", "8.40")]
    # Its line names the part of the period it belongs to: the start to the cancellation.
    assert (last["lines"][0]["period_start"], last["lines"][0]["period_end"]) == (start, canceled["canceled_at"])
    assert (last["subtotal"], last["total"], last["status"], last["amount_paid"]) == ("8.40", "10.08", "paid", "10.08")


def test_an_immediate_cancel_just_after_a_boundary_the_run_has_not_billed_prorates_the_new_period(
        stage, operator, new_merchant):
    merchant = new_merchant(invoice_prefix="RG6")
    customer_id = new_customer(merchant)
    save_card(stage, merchant, customer_id)
    # Started 3 minutes after a tick of the billing job (at most a day ago): its
    # boundary a month later is 3 minutes after a tick too.
    now = stage_now(operator)
    tick = datetime.fromtimestamp(now.timestamp() // TICK.total_seconds() * TICK.total_seconds(), timezone.utc)
    start = tick + timedelta(minutes=3)
    if start > now - timedelta(seconds=5):
        start -= TICK
    subscription = subscribe(merchant, customer_id, new_offer(merchant, BASE, MONTAGE), start_at=iso(start))
    assert (subscription["status"], subscription["current_period_start"]) == ("active", iso(start))
    sub_id, boundary = subscription["id"], instant(subscription["current_period_end"])
    assert merchant.post("/usage", json={"events": [{"event_id": "rg6-1", "subscription_id": sub_id,
                                                     "meter": "montages", "quantity": "10",
                                                     "timestamp": iso(start)}]}).status_code == 200

    move_clock(operator, boundary - timedelta(minutes=2))  # the runs before the boundary
    moved = move_clock(operator, boundary + timedelta(minutes=4))  # past it, before the next run (boundary + 12 min)
    # No billing run (the webhook retry job runs every 5 minutes).
    assert [job["name"] for job in moved["jobs"] if job["name"] != "webhook_scheduler"] == []
    assert [i["billing_reason"] for i in invoices_of(merchant, sub_id)] == ["subscription_create"]
    new_period = merchant.get(f"/subscriptions/{sub_id}").json()
    # Not billed yet: reading it still shows the first period.
    assert new_period["current_period_end"] == iso(boundary)

    canceled = cancel_now(merchant, sub_id)
    cancel_at = instant(canceled["canceled_at"])
    assert boundary < cancel_at < boundary + timedelta(minutes=12)
    invoices = invoices_of(merchant, sub_id)
    assert [i["billing_reason"] for i in invoices][1:] == ["subscription_cycle", "subscription_create"], invoices
    cycle, cancellation = invoices[1], invoices[0]
    # The boundary's invoice: the first period's 10 montages (12.00) and the new period's fee (31.00).
    assert sorted((ln["kind"], ln["amount"], ln["period_start"]) for ln in cycle["lines"]) == [
        ("fee", "31.00", iso(boundary)), ("usage", "12.00", iso(start))]
    assert cycle["subtotal"] == "43.00"
    fee_line = next(ln for ln in cycle["lines"] if ln["kind"] == "fee")
    period_end = instant(fee_line["period_end"])
    # The cancellation credits the new period's unused fee, 4 minutes in:
    # 31.00 x floor((end - cancel) / 1 day) / round((end - boundary) / 1 day),
    # e.g. a 31-day period: 31.00 x 30 / 31 = 30.00 back.
    prorations = [ln for ln in cancellation["lines"] if ln["kind"] == "proration"]
    # Its line names the part of the new period it credits: from the cancellation to the new period's end.
    assert [(ln["period_start"], ln["period_end"]) for ln in prorations] == [
        (canceled["canceled_at"], iso(period_end))]
    assert (canceled["current_period_start"], canceled["current_period_end"]) == (iso(boundary), iso(period_end))
    assert [Decimal(ln["amount"]) for ln in prorations] == [-prorated("31.00", boundary, period_end, cancel_at)]


def test_proration_counts_remaining_whole_utc_days_in_a_month_shortened_by_daylight_saving(
        stage, operator, new_merchant):
    merchant = new_merchant(invoice_prefix="RG7", timezone="Europe/Paris")
    customer_id = new_customer(merchant)
    save_card(stage, merchant, customer_id)
    # To the next 10 March, 12:00 UTC (forward only): a month from then in
    # Paris crosses the last Sunday of March, when clocks go an hour ahead.
    now = stage_now(operator)
    year = now.year if now < datetime(now.year, 3, 10, 12, tzinfo=timezone.utc) else now.year + 1
    move_clock(operator, datetime(year, 3, 10, 12, tzinfo=timezone.utc))
    subscription = subscribe(merchant, customer_id, new_offer(merchant, BASE))
    start, end = instant(subscription["current_period_start"]), instant(subscription["current_period_end"])
    # 10 March 13:00 CET -> 10 April 13:00 CEST: 31 days less the DST hour, 31 days once rounded.
    assert end - start == timedelta(days=31, hours=-1)

    # 23 h 30 min in: end - now = 31 d - 1 h - 23 h 30 min = 29 d 23 h 30 min,
    # 29 whole days remain: 31.00 x 29 / 31 = 29.00 back. (Counting from the
    # start instead, 31 days - 1 started day = 30 would give 30.00.)
    move_clock(operator, start + timedelta(hours=23, minutes=30))
    canceled = cancel_now(merchant, subscription["id"])
    cancel_at = instant(canceled["canceled_at"])
    assert (end - cancel_at) // DAY == 29
    cancellation = invoices_of(merchant, subscription["id"])[0]
    assert cancellation["billing_reason"] != "subscription_create"
    prorations = [ln for ln in cancellation["lines"] if ln["kind"] == "proration"]
    assert [(ln["amount"], ln["period_start"], ln["period_end"]) for ln in prorations] == [
        ("-29.00", canceled["canceled_at"], iso(end))]
    # -29.00, VAT -5.80: -34.80, which becomes the customer's credit.
    assert (cancellation["subtotal"], cancellation["total"]) == ("-29.00", "-34.80")
    assert merchant.get(f"/customers/{customer_id}").json()["credit_balance"] == "34.80"
