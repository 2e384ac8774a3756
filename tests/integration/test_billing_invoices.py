"""Invoices and their money (moto, localstripe): a tax-exempt customer's
reverse charge with credit used first, a zero invoice paid without Stripe,
gapless numbers under concurrent finalization and billing, and the invoices
API (list, read, PDF in the customer's language, pay now, void).

The helpers, the clock's start and atomic_dynamodb are test_billing.py's."""
from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest

from chalicelib import jobs, payments
from chalicelib.services import collecting, invoices, issuing
from chalicelib.store import customers as customer_store
from chalicelib.store import invoices as invoice_store
from tests.integration.test_concurrency import run_threads
from tests.integration.test_billing import (  # noqa: F401  (atomic_dynamodb and clock_start are fixtures)
    CARD_DECLINED_ON_CHARGE, CARD_OK, DEC_1, JAN_1, NOV_1, atomic_dynamodb, bill, charges_of, clock_start,
    invoices_of, iso, new_customer, pdf_text, save_card, simple_offer, subscribe,
)


# ---------------------------------------------------------------------------
# Money rules on the invoice


def test_a_tax_exempt_customer_gets_a_reverse_charge_and_credit_is_used_first(merchant, clock):
    customer_id = new_customer(merchant, country="DE", tax_exempt=True)
    merchant_id = merchant.merchant["id"]
    from chalicelib.store.base import transaction

    with transaction() as write:  # a credit the customer earned earlier
        customer_store.credit_balance_update(write, merchant_id, customer_id, "EUR", Decimal(0), Decimal("20.00"))
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    [invoice] = invoices_of(merchant, sub["id"])
    assert invoice["tax"] == [{"rate": "0", "amount": "0.00"}] and invoice["reverse_charge"] is True
    assert (invoice["subtotal"], invoice["total"], invoice["credit_applied"]) == ("49.00", "49.00", "20.00")
    # What was left after the credit was charged: paid, nothing due.
    assert (invoice["status"], invoice["amount_paid"], invoice["amount_due"]) == ("paid", "29.00", "0.00")
    assert customer_store.get_customer(merchant_id, customer_id).credit_balance("EUR") == 0
    assert [c["amount"] for c in charges_of(merchant, customer_id)] == [2900]


def test_a_zero_invoice_is_paid_at_once_without_stripe(merchant, clock):
    customer_id = new_customer(merchant, card=None)
    offer_id = simple_offer(merchant, code="free", base="0.00")
    sub = subscribe(merchant, customer_id, offer_id, start_at=iso(NOV_1))
    bill(merchant, sub["id"])
    [invoice] = invoices_of(merchant, sub["id"])
    assert invoice["status"] == "paid" and invoice["total"] == "0.00" and invoice["payment_attempts"] == []
    assert invoice["number"] == "OD2026-000001"


# ---------------------------------------------------------------------------
# Numbers


def test_numbers_are_gapless_under_concurrent_finalization(merchant, clock, atomic_dynamodb):
    """Twelve drafts finalized by twelve threads at once (each re-reads the
    counter after losing a race), and a finalization that fails on its own
    invoice: the numbers are 1..12, each once, none skipped."""
    merchant_id = merchant.merchant["id"]
    drafts = []
    for n in range(12):
        record = invoice_store.InvoiceRecord(
            *invoice_store.InvoiceRecord.key(merchant_id, f"inv_draft{n:02d}"),
            merchant_id=merchant_id, invoice_id=f"inv_draft{n:02d}", status="draft",
            billing_reason="manual", customer_id="cus_x", currency="EUR", invoice_date=iso(NOV_1),
            lines="[]", tax="[]", subtotal="0.00", tax_amount="0.00", total="0.00", credit_applied="0.00",
            amount_due="0.00", amount_paid="0.00", starting_balance="0.00", ending_balance="0.00",
            created_at=iso(NOV_1),
        )
        assert invoice_store.save_draft(record)
        drafts.append(record)
    assert not invoice_store.save_draft(drafts[0])  # its id exists: never a second invoice
    errors = run_threads(lambda record: invoice_store.finalize(record, prefix="OD", year=2026,
                                                               finalized_at=iso(NOV_1), new=False),
                         [(record,) for record in drafts])
    assert not errors, errors
    numbers = sorted(invoice_store.get_invoice(merchant_id, r.invoice_id).number for r in drafts)
    assert numbers == [f"OD2026-{n:06d}" for n in range(1, 13)]
    assert invoice_store.last_number(merchant_id, 2026) == 12
    # Finalizing again is refused and takes no number.
    from chalicelib.domain.errors import Conflict

    with pytest.raises(Conflict):
        invoice_store.finalize(drafts[0], prefix="OD", year=2026, finalized_at=iso(NOV_1), new=False)
    assert invoice_store.last_number(merchant_id, 2026) == 12


def test_invoices_of_many_subscriptions_billed_at_once_take_consecutive_numbers(merchant, clock, atomic_dynamodb):
    offer_id = simple_offer(merchant)
    subs = [subscribe(merchant, new_customer(merchant, name=f"Labo {n}"), offer_id, start_at=iso(NOV_1))
            for n in range(6)]
    errors = run_threads(lambda sub: bill(merchant, sub["id"]), [(sub,) for sub in subs])
    assert not errors, errors
    numbers = sorted(i["number"] for i in merchant.get("/invoices?limit=100").json["data"])
    assert numbers == [f"OD2026-{n:06d}" for n in range(1, 7)]


# ---------------------------------------------------------------------------
# The invoices API


@pytest.fixture
def two_invoices(merchant, clock):
    customer_id = new_customer(merchant, locale="fr")
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    bill(merchant, sub["id"])
    clock.set(DEC_1 + timedelta(minutes=1))
    bill(merchant, sub["id"])
    return customer_id, sub["id"], invoices_of(merchant, sub["id"])


def test_listing_by_customer_subscription_and_status(merchant, clock, two_invoices):
    customer_id, sub_id, invoices = two_invoices
    other_customer = new_customer(merchant, card=None, name="Autre")
    subscribe(merchant, other_customer, simple_offer(merchant, code="other"), start_at=iso(clock.now()))
    issuing.bill_subscription(merchant.merchant["id"],
                              merchant.get(f"/subscriptions?customer_id={other_customer}").json["data"][0]["id"])
    everything = merchant.get("/invoices").json["data"]
    assert len(everything) == 3 and everything[0]["customer_id"] == other_customer  # newest first
    assert [i["id"] for i in merchant.get(f"/invoices?customer_id={customer_id}").json["data"]] == [
        invoices[1]["id"], invoices[0]["id"]]
    assert len(merchant.get(f"/invoices?subscription_id={sub_id}&status=paid").json["data"]) == 2
    assert [i["customer_id"] for i in merchant.get("/invoices?status=open").json["data"]] == [other_customer]
    assert merchant.get(f"/invoices?customer_id={customer_id}&status=open").json["data"] == []
    first = merchant.get("/invoices?limit=2").json
    assert first["has_more"] is True and len(first["data"]) == 2
    rest = merchant.get(f"/invoices?limit=2&cursor={first['next_cursor']}").json
    assert rest["has_more"] is False and [i["id"] for i in rest["data"]] == [invoices[0]["id"]]
    page = merchant.get(f"/invoices?customer_id={customer_id}&limit=1").json
    assert page["has_more"] is True
    assert merchant.get(f"/invoices?customer_id={customer_id}&limit=1&cursor={page['next_cursor']}").json[
        "data"][0]["id"] == invoices[0]["id"]
    bad = merchant.get("/invoices?status=late")
    assert bad.status == 400 and bad.json["error"]["param"] == "status"
    assert merchant.get("/invoices?customer_id=nope").json["error"]["param"] == "customer_id"
    assert merchant.get("/invoices?cursor=Zm9v").json["error"]["param"] == "cursor"
    # The customer page shows its latest invoices.
    page = merchant.get(f"/customers/{customer_id}").json
    assert [i["id"] for i in page["latest_invoices"]] == [invoices[1]["id"], invoices[0]["id"]]


def test_an_invoice_is_the_merchants_only(merchant, new_merchant, clock, two_invoices):
    _, _, invoices = two_invoices
    other = new_merchant(name="Autre opticien", invoice_prefix="AO")
    for path in ("", "/pdf"):
        assert other.get(f"/invoices/{invoices[0]['id']}{path}", headers={"Accept": "application/pdf"}).status == 404
    assert other.post(f"/invoices/{invoices[0]['id']}/void").status == 404
    assert other.get("/invoices").json["data"] == []
    assert merchant.get("/invoices/inv_nope").status == 404


def test_the_pdf_is_a_real_invoice_in_the_customers_language(merchant, clock, two_invoices, client):
    _, _, invoices = two_invoices
    response = client.http.get(
        f"/invoices/{invoices[1]['id']}/pdf",
        headers={"Authorization": f"Bearer {merchant.key}", "Accept": "application/pdf"},
    )
    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"] == "application/pdf"
    assert "OD2026-000002.pdf" in response.headers["Content-Disposition"]
    document = response.body
    assert document.startswith(b"%PDF-") and document.rstrip().endswith(b"%%EOF")
    text = pdf_text(document)
    for expected in ("Facture", "OD2026-000002", "Optique Durand", "Labo Martin", "Total TTC", "TVA 20,0 %",
                     "58,80", "01/12/2026", "indemnité forfaitaire"):
        assert expected in text, expected
    refused = client.http.get(f"/invoices/{invoices[1]['id']}/pdf",
                              headers={"Authorization": f"Bearer {merchant.key}", "Accept": "application/json"})
    assert refused.status_code == 400 and json.loads(refused.body)["error"]["param"] == "Accept"


def test_the_pdf_of_a_reverse_charge_invoice_says_so_in_english(merchant, clock):
    customer_id = new_customer(merchant, country="DE", tax_exempt=True, locale="en")
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    bill(merchant, sub["id"])
    [invoice] = invoices_of(merchant, sub["id"])
    document, name = invoices.invoice_pdf(merchant.merchant["id"], invoice["id"])
    text = pdf_text(document)
    assert "Invoice" in text and "Reverse charge" in text and "2026-11-01" in text and name.endswith(".pdf")


def test_pay_now_and_void(merchant, clock):
    customer_id = new_customer(merchant, card=CARD_DECLINED_ON_CHARGE)
    sub = subscribe(merchant, customer_id, simple_offer(merchant), start_at=iso(NOV_1))
    bill(merchant, sub["id"])
    [invoice] = invoices_of(merchant, sub["id"])
    declined = merchant.post(f"/invoices/{invoice['id']}/pay")
    assert declined.status == 402 and declined.json["error"]["code"] == "card_declined"
    after = merchant.get(f"/invoices/{invoice['id']}").json
    assert [a["status"] for a in after["payment_attempts"]] == ["failed", "failed"]
    # The customer enters a working card: the hook pays the invoice.
    save_card(merchant, customer_id, CARD_OK)
    assert merchant.get(f"/invoices/{invoice['id']}").json["status"] == "paid"
    already = merchant.post(f"/invoices/{invoice['id']}/pay")
    assert already.status == 409 and already.json["error"]["code"] == "invalid_state"
    refused = merchant.post(f"/invoices/{invoice['id']}/void")
    assert refused.status == 409 and refused.json["error"]["code"] == "invalid_state"

    # December's invoice fails, is voided: its number stays used, nothing is due.
    clock.set(DEC_1 + timedelta(minutes=1))
    collecting.use_gateway(Declining())
    try:
        bill(merchant, sub["id"])
    finally:
        collecting.use_gateway(None)
    december = invoices_of(merchant, sub["id"])[-1]
    assert december["status"] == "open"
    assert merchant.get(f"/subscriptions/{sub['id']}").json["status"] == "past_due"
    voided = merchant.post(f"/invoices/{december['id']}/void")
    assert voided.status == 200 and voided.json["status"] == "void" and voided.json["number"] == "OD2026-000002"
    assert voided.json["next_payment_attempt"] is None
    assert merchant.get(f"/subscriptions/{sub['id']}").json["status"] == "active"
    clock.set(DEC_1 + timedelta(days=10))
    assert jobs.dunning_scheduler(clock.now(), inline=True)["due"] == 0
    clock.set(JAN_1 + timedelta(minutes=1))
    bill(merchant, sub["id"])
    assert invoices_of(merchant, sub["id"])[-1]["number"] == "OD2027-000001"


class Declining:
    """Stripe declining every charge (a bank's bad day), through the real gateway's error type."""

    def __getattr__(self, name):
        return getattr(payments, name)

    def charge_invoice(self, **kwargs):
        raise payments.Declined("insufficient_funds", "declined")
