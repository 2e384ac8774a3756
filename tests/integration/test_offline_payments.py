"""Offline payments on moto and localstripe: partial payments lower the
amount due and the last one makes the invoice paid (the subscription
follows, as after a card payment), an overpayment goes to the credit
balance, a retried request records one payment, a charge in flight or a
settled invoice refuses one, the customer page shows payments of every
method, and bad fields are 400s naming the field.

The invoices are the simple offer's first (base 49.00 + VAT 9.80 = 58.80)."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from chalicelib.services import offline_payments
from chalicelib.store import invoices as invoice_store
from tests.integration.domain_events import published  # noqa: F401  (fixture)
from tests.integration.test_billing import clock_start  # noqa: F401  (fixture)
from tests.integration.test_billing import iso
from tests.integration.test_credit_notes import first_invoice


def pay(merchant, invoice_id, body, **kw):
    return merchant.post(f"/invoices/{invoice_id}/payments", body, **kw)


def test_partial_payments_then_the_last_one_pays_the_invoice(merchant, clock, published):
    customer_id, sub, invoice = first_invoice(merchant, card=False)
    assert merchant.get(f"/subscriptions/{sub['id']}").json["status"] == "incomplete"

    cash = pay(merchant, invoice["id"], {"method": "cash", "amount": "20.00"})
    assert cash.status == 201, cash
    payment = cash.json
    assert payment["id"].startswith("pay_") and payment["object"] == "payment"
    assert (payment["method"], payment["amount"], payment["applied"], payment["to_credit_balance"]) == (
        "cash", "20.00", "20.00", "0.00")
    assert (payment["currency"], payment["received_at"], payment["reference"]) == ("EUR", iso(clock.now()), None)
    assert (payment["invoice"]["status"], payment["invoice"]["amount_paid"], payment["invoice"]["amount_due"]) == (
        "open", "20.00", "38.80")
    assert merchant.get(f"/subscriptions/{sub['id']}").json["status"] == "incomplete"

    clock.set(clock.now() + timedelta(days=2))
    cheque = pay(merchant, invoice["id"], {"method": "cheque", "amount": "38.80", "reference": "CHQ 0012345",
                                           "received_at": iso(clock.now() - timedelta(days=1))}).json
    assert (cheque["applied"], cheque["reference"]) == ("38.80", "CHQ 0012345")
    paid = merchant.get(f"/invoices/{invoice['id']}").json
    assert (paid["status"], paid["amount_paid"], paid["amount_due"], paid["next_payment_attempt"]) == (
        "paid", "58.80", "0.00", None)
    assert [(p["method"], p["amount"]) for p in paid["payments"]] == [("cash", "20.00"), ("cheque", "38.80")]
    assert merchant.get(f"/subscriptions/{sub['id']}").json["status"] == "active"
    assert [e["invoice"]["id"] for e in published.of_type("invoice.paid")] == [invoice["id"]]

    again = pay(merchant, invoice["id"], {"method": "cash", "amount": "1.00"})
    assert again.status == 409 and again.json["error"]["code"] == "invalid_state"
    page = merchant.get(f"/customers/{customer_id}").json
    assert [(p["method"], p["amount"], p["invoice_id"]) for p in page["payments"]] == [
        ("cheque", "38.80", invoice["id"]), ("cash", "20.00", invoice["id"])]
    assert page["credit_balance"] == "0.00"


def test_an_overpayment_goes_to_the_credit_balance(merchant, clock):
    customer_id, _, invoice = first_invoice(merchant, card=False)
    answer = pay(merchant, invoice["id"], {"method": "bank_transfer", "amount": "60.00", "reference": "VIR 88"})
    assert answer.status == 201, answer
    assert (answer.json["applied"], answer.json["to_credit_balance"], answer.json["invoice"]["status"]) == (
        "58.80", "1.20", "paid")
    page = merchant.get(f"/customers/{customer_id}").json
    assert (page["credit_balance"], page["credit_balances"]) == ("1.20", {"EUR": "1.20"})


def test_a_retried_payment_is_recorded_once(merchant, clock):
    _, _, invoice = first_invoice(merchant, card=False)
    body = {"method": "cash", "amount": "10.00"}
    first = pay(merchant, invoice["id"], body, headers={"Idempotency-Key": "cash-1"})
    again = pay(merchant, invoice["id"], body, headers={"Idempotency-Key": "cash-1"})
    assert first.status == again.status == 201 and first.json["id"] == again.json["id"]
    other_body = pay(merchant, invoice["id"], {**body, "amount": "11.00"}, headers={"Idempotency-Key": "cash-1"})
    assert other_body.status == 409 and other_body.json["error"]["code"] == "idempotency_mismatch"
    # The same request coming back after its answer was lost (the API's record
    # of the key gone with a crash): the invoice knows the key, one payment.
    merchant_id = merchant.merchant["id"]
    for _ in range(2):
        offline_payments.record_payment(merchant_id, invoice["id"], method="cash", amount=Decimal("5.00"),
                                        reference=None, received_at=None, request_key="lost-answer")
    shown = merchant.get(f"/invoices/{invoice['id']}").json
    assert ([p["amount"] for p in shown["payments"]], shown["amount_due"]) == (["10.00", "5.00"], "43.80")


def test_a_charge_in_flight_or_a_settled_invoice_takes_no_payment(merchant, clock):
    _, _, invoice = first_invoice(merchant, card=False)
    record = invoice_store.get_invoice(merchant.merchant["id"], invoice["id"])
    attempts = record.attempts() + [{"attempt": 2, "at": iso(clock.now()), "status": "pending",
                                     "payment_intent": None, "failure_code": None}]
    record.set_attempts(attempts)
    record.set_due(clock.now() + timedelta(minutes=5))
    invoice_store.save(record)
    busy = pay(merchant, invoice["id"], {"method": "cash", "amount": "58.80"})
    assert busy.status == 409 and busy.json["error"]["code"] == "invalid_state"
    assert "in progress" in busy.json["error"]["message"]
    # Once the lease is over (the worker died before Stripe): the payment closes the attempt.
    clock.set(clock.now() + timedelta(minutes=6))
    settled = pay(merchant, invoice["id"], {"method": "cash", "amount": "58.80"})
    assert settled.status == 201, settled
    attempts = settled.json["invoice"]["payment_attempts"]
    assert [(a["status"], a["failure_code"]) for a in attempts][-1] == ("failed", "paid_out_of_band")
    # A paid (by card) or void invoice takes none; nor an unknown one.
    _, _, by_card = first_invoice(merchant, name="Labo Carte")
    assert pay(merchant, by_card["id"], {"method": "cash", "amount": "1.00"}).status == 409
    _, _, voided = first_invoice(merchant, card=False, name="Labo Annule")
    assert merchant.post(f"/invoices/{voided['id']}/void").status == 200
    assert pay(merchant, voided["id"], {"method": "cash", "amount": "1.00"}).status == 409
    assert pay(merchant, "inv_nope", {"method": "cash", "amount": "1.00"}).status == 404


def test_the_customer_page_shows_card_and_offline_payments(merchant, clock):
    customer_id, _, invoice = first_invoice(merchant)
    page = merchant.get(f"/customers/{customer_id}").json
    [card] = page["payments"]
    assert (card["method"], card["amount"], card["invoice_id"]) == ("card", "58.80", invoice["id"])
    assert card["id"] == invoice["payment_attempts"][0]["payment_intent"]
    assert card["amount_refunded"] == "0.00"
    merchant.post(f"/invoices/{invoice['id']}/credit-notes", {"amount": "6.00", "reason": "goodwill", "refund": "card"})
    assert merchant.get(f"/customers/{customer_id}").json["payments"][0]["amount_refunded"] == "6.00"


@pytest.mark.parametrize("body, param", [
    ({"method": "card", "amount": "1.00"}, "method"),
    ({"amount": "1.00"}, "method"),
    ({"method": "cash"}, "amount"),
    ({"method": "cash", "amount": 10}, "amount"),
    ({"method": "cash", "amount": "0"}, "amount"),
    ({"method": "cash", "amount": "-5.00"}, "amount"),
    ({"method": "cash", "amount": "1.001"}, "amount"),
    ({"method": "cash", "amount": "1.00", "reference": "x" * 201}, "reference"),
    ({"method": "cash", "amount": "1.00", "received_at": "yesterday"}, "received_at"),
    ({"method": "cash", "amount": "1.00", "received_at": "2026-11-01T10:00:00"}, "received_at"),
    ({"method": "cash", "amount": "1.00", "received_at": "2030-01-01T00:00:00Z"}, "received_at"),
    ({"method": "cash", "amount": "1.00", "currency": "EUR"}, "currency"),
])
def test_bad_fields_are_a_400_naming_the_field(merchant, clock, body, param):
    _, _, invoice = first_invoice(merchant, card=False)
    response = pay(merchant, invoice["id"], body)
    assert response.status == 400 and response.json["error"]["param"] == param, response
    assert merchant.get(f"/invoices/{invoice['id']}").json["payments"] == []
