"""Credit notes on moto and localstripe: amounts worked by hand (pre-tax
lines, tax added at the invoice's rate), an open invoice's amount due
lowered, a paid invoice refunded to the card exactly once (retried, crashed
before and after Stripe) or to the credit balance that the next invoice
uses, never more than the invoice's total, a gapless CN series, the PDF, the
listing and the 400s naming the field.

Every invoice here is Optique Durand's simple offer for a French customer:
base 49.00 + VAT 20% 9.80 = 58.80."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib import payments
from chalicelib.store import invoices as invoice_store
from tests.integration.domain_events import published  # noqa: F401  (fixture)
from tests.integration.test_billing import (  # noqa: F401  (fixtures)
    DEC_1,
    NOV_1,
    atomic_dynamodb,
    bill,
    charges_of,
    clock_start,
    invoices_of,
    iso,
    new_customer,
    pdf_text,
    simple_offer,
    subscribe,
)

UTC = timezone.utc


def first_invoice(merchant, *, card=True, **customer_fields):
    """A customer subscribed to the simple offer, and its first invoice
    (paid by card, or open when it has no card)."""
    customer_id = new_customer(merchant, card="4242424242424242" if card else None, **customer_fields)
    offer_id = getattr(merchant, "offer_id", None) or simple_offer(merchant)
    merchant.offer_id = offer_id
    sub = subscribe(merchant, customer_id, offer_id)  # starts now
    [invoice] = invoices_of(merchant, sub["id"])
    return customer_id, sub, invoice


def credit(merchant, invoice_id, body, **kw):
    return merchant.post(f"/invoices/{invoice_id}/credit-notes", body, **kw)


def refunds_of(payment_intent: str) -> list[dict]:
    listing = payments._client().v1.refunds.list(params={"payment_intent": payment_intent, "limit": 100})
    return [refund.to_dict() for refund in listing.data]


def test_a_credit_note_on_an_open_invoice_lowers_the_amount_due(merchant, clock, published):
    _, sub, invoice = first_invoice(merchant, card=False)
    assert (invoice["status"], invoice["amount_due"], invoice["amount_credited"]) == ("open", "58.80", "0.00")
    [line] = invoice["lines"]
    assert line["id"] == f"il_{invoice['id'][4:]}_0" and line["amount"] == "49.00"
    assert merchant.get(f"/subscriptions/{sub['id']}").json["status"] == "incomplete"

    # 10.00 of the base, before tax: 10.00 + VAT 2.00 = 12.00 off the amount due.
    response = credit(merchant, invoice["id"], {"lines": [{"invoice_line_id": line["id"], "amount": "10.00"}],
                                               "reason": "order_change", "refund": "none", "memo": "smaller frame"})
    assert response.status == 201, response
    note = response.json
    assert note["id"].startswith("cn_") and note["object"] == "credit_note" and note["number"] == "ODCN2026-000001"
    assert (note["subtotal"], note["tax"], note["total"]) == ("10.00", [{"rate": "20.0", "amount": "2.00"}], "12.00")
    assert note["lines"] == [{"invoice_line_id": line["id"], "description": line["description"], "amount": "10.00"}]
    assert (note["type"], note["refund"], note["refund_status"], note["stripe_refund_id"]) == (
        "pre_payment", "none", None, None)
    assert (note["invoice_id"], note["customer_id"], note["reason"], note["memo"]) == (
        invoice["id"], invoice["customer_id"], "order_change", "smaller frame")
    after = merchant.get(f"/invoices/{invoice['id']}").json
    assert (after["status"], after["amount_due"], after["amount_credited"], after["total"]) == (
        "open", "46.80", "12.00", "58.80")
    assert [(c["id"], c["number"], c["total"], c["refund"]) for c in after["credit_notes"]] == [
        (note["id"], "ODCN2026-000001", "12.00", "none")]

    # Nothing was paid: nothing to refund. More than is due, or than is left of the line: 400.
    for body, param in [
        ({"amount": "5.00", "reason": "goodwill", "refund": "card"}, "refund"),
        ({"amount": "5.00", "reason": "goodwill", "refund": "credit_balance"}, "refund"),
        ({"amount": "46.81", "reason": "goodwill", "refund": "none"}, "amount"),
        ({"lines": [{"invoice_line_id": line["id"], "amount": "39.01"}], "reason": "goodwill", "refund": "none"},
         "lines[0].amount"),
        ({"lines": [{"invoice_line_id": line["id"][:-1] + "7", "amount": "1.00"}], "reason": "goodwill",
          "refund": "none"}, "lines[0].invoice_line_id"),
    ]:
        refused = credit(merchant, invoice["id"], body)
        assert refused.status == 400 and refused.json["error"]["param"] == param, (body, refused)

    # The rest, as one amount (tax included): 39.00 + the 7.80 of VAT left = 46.80. Nothing is due: paid.
    rest = credit(merchant, invoice["id"], {"amount": "46.80", "reason": "goodwill", "refund": "none"}).json
    assert (rest["number"], rest["subtotal"], rest["tax"][0]["amount"], rest["total"]) == (
        "ODCN2026-000002", "39.00", "7.80", "46.80")
    assert rest["lines"][0]["invoice_line_id"] is None
    paid = merchant.get(f"/invoices/{invoice['id']}").json
    assert (paid["status"], paid["amount_due"], paid["amount_credited"]) == ("paid", "0.00", "58.80")
    assert paid["next_payment_attempt"] is None
    assert merchant.get(f"/subscriptions/{sub['id']}").json["status"] == "active"
    assert [e["credit_note"]["number"] for e in published.of_type("credit_note.created")] == [
        "ODCN2026-000001", "ODCN2026-000002"]
    assert invoice["id"] in [e["invoice"]["id"] for e in published.of_type("invoice.paid")]
    # All of it is credited: not a cent more.
    more = credit(merchant, invoice["id"], {"amount": "0.01", "reason": "goodwill", "refund": "none"})
    assert more.status == 400 and more.json["error"]["param"] == "amount"


def test_a_credit_note_on_a_paid_invoice_refunds_the_card_once(merchant, clock, monkeypatch):
    customer_id, _, invoice = first_invoice(merchant)
    assert invoice["status"] == "paid" and invoice["amount_paid"] == "58.80"
    [attempt] = invoice["payment_attempts"]
    intent = attempt["payment_intent"]
    line_id = invoice["lines"][0]["id"]
    body = {"lines": [{"invoice_line_id": line_id, "amount": "20.00"}], "reason": "product_unsatisfactory",
            "refund": "card"}

    first = credit(merchant, invoice["id"], body, headers={"Idempotency-Key": "cn-once"})
    assert first.status == 201, first
    note = first.json
    # 20.00 + VAT 4.00 = 24.00 back on the card.
    assert (note["total"], note["type"], note["refund_status"]) == ("24.00", "post_payment", "succeeded")
    again = credit(merchant, invoice["id"], body, headers={"Idempotency-Key": "cn-once"})
    assert again.status == 201 and again.json["id"] == note["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    [refund] = refunds_of(intent)
    assert (refund["id"], refund["amount"], refund["metadata"]["credit_note_id"]) == (
        note["stripe_refund_id"], 2400, note["id"])
    shown = merchant.get(f"/invoices/{invoice['id']}").json
    assert (shown["status"], shown["amount_paid"], shown["amount_due"], shown["amount_credited"]) == (
        "paid", "58.80", "0.00", "24.00")

    # Stripe unreachable before it refunds: 503, the credit note waits with its refund pending;
    # the same request again (same key) makes the refund, once.
    real_refund = payments.refund

    def unreachable(*args, **kwargs):
        raise payments.Unavailable("down")

    monkeypatch.setattr(payments, "refund", unreachable)
    small = {"amount": "6.00", "reason": "goodwill", "refund": "card"}
    failed = credit(merchant, invoice["id"], small, headers={"Idempotency-Key": "cn-retry"})
    assert failed.status == 503, failed
    [pending] = [c for c in merchant.get(f"/credit-notes?invoice_id={invoice['id']}").json["data"]
                 if c["total"] == "6.00"]
    assert pending["refund_status"] == "pending" and pending["stripe_refund_id"] is None
    monkeypatch.setattr(payments, "refund", real_refund)
    done = credit(merchant, invoice["id"], small, headers={"Idempotency-Key": "cn-retry"})
    assert done.status == 201 and done.json["id"] == pending["id"] and done.json["refund_status"] == "succeeded"
    assert sorted(r["amount"] for r in refunds_of(intent)) == [600, 2400]

    # A crash after Stripe refunded, before we wrote it down: the retry finds the refund at Stripe.
    def refunds_then_crashes(*args, **kwargs):
        real_refund(*args, **kwargs)
        raise payments.Unavailable("timed out")

    monkeypatch.setattr(payments, "refund", refunds_then_crashes)
    crashed = credit(merchant, invoice["id"], {**small, "amount": "3.00"}, headers={"Idempotency-Key": "cn-crash"})
    assert crashed.status == 503
    monkeypatch.setattr(payments, "refund", unreachable)  # never called again
    resumed = credit(merchant, invoice["id"], {**small, "amount": "3.00"}, headers={"Idempotency-Key": "cn-crash"})
    assert resumed.status == 201 and resumed.json["refund_status"] == "succeeded", resumed
    assert sorted(r["amount"] for r in refunds_of(intent)) == [300, 600, 2400]
    assert len(merchant.get(f"/credit-notes?invoice_id={invoice['id']}").json["data"]) == 3

    # 58.80 - 24.00 - 6.00 - 3.00 = 25.80 is left to credit: more is refused.
    over = credit(merchant, invoice["id"], {"amount": "25.81", "reason": "goodwill", "refund": "card"})
    assert over.status == 400 and over.json["error"]["param"] == "amount"
    assert len(refunds_of(intent)) == 3 and len(charges_of(merchant, customer_id)) == 1


def test_a_refund_to_the_credit_balance_pays_the_next_invoice_first(merchant, clock):
    customer_id, sub, invoice = first_invoice(merchant)
    # 12.00 tax included: 10.00 + VAT 2.00.
    note = credit(merchant, invoice["id"], {"amount": "12.00", "reason": "goodwill", "refund": "credit_balance"})
    assert note.status == 201, note
    assert (note.json["subtotal"], note.json["tax"][0]["amount"], note.json["total"]) == ("10.00", "2.00", "12.00")
    page = merchant.get(f"/customers/{customer_id}").json
    assert (page["currency"], page["credit_balance"], page["credit_balances"]) == ("EUR", "12.00", {"EUR": "12.00"})
    assert [c["id"] for c in page["credit_notes"]] == [note.json["id"]]

    clock.set(DEC_1 + timedelta(minutes=1))
    bill(merchant, sub["id"])
    december = invoices_of(merchant, sub["id"])[-1]
    assert (december["total"], december["credit_applied"], december["amount_paid"], december["status"]) == (
        "58.80", "12.00", "46.80", "paid")
    assert sorted(c["amount"] for c in charges_of(merchant, customer_id)) == [4680, 5880]
    assert merchant.get(f"/customers/{customer_id}").json["credit_balance"] == "0.00"


def test_a_reverse_charge_invoice_is_credited_without_tax(merchant, clock):
    _, _, invoice = first_invoice(merchant, country="DE", tax_exempt=True, locale="en")
    line_id = invoice["lines"][0]["id"]
    note = credit(merchant, invoice["id"], {"lines": [{"invoice_line_id": line_id, "amount": "49.00"}],
                                            "reason": "duplicate", "refund": "credit_balance"}).json
    assert (note["subtotal"], note["tax"], note["total"], note["reverse_charge"]) == (
        "49.00", [{"rate": "0", "amount": "0.00"}], "49.00", True)


def test_two_credit_notes_racing_on_one_invoice_never_credit_more_than_its_total(merchant, clock, atomic_dynamodb):
    _, _, invoice = first_invoice(merchant, card=False)
    start = threading.Barrier(2)
    answers = []

    def issue():
        start.wait(30)
        answers.append(credit(merchant, invoice["id"], {"amount": "40.00", "reason": "goodwill", "refund": "none"}))

    threads = [threading.Thread(target=issue) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(a.status for a in answers) == [201, 400], answers
    shown = merchant.get(f"/invoices/{invoice['id']}").json
    assert (shown["amount_due"], shown["amount_credited"], len(shown["credit_notes"])) == ("18.80", "40.00", 1)


def test_numbers_are_a_gapless_series_of_their_own_per_year(merchant, clock, atomic_dynamodb):
    opened = [first_invoice(merchant, card=False, name=f"Labo {n}")[2] for n in range(5)]
    assert [i["number"] for i in opened] == [f"OD2026-{n:06d}" for n in range(1, 6)]
    start = threading.Barrier(len(opened))
    answers = []

    def issue(invoice):
        start.wait(30)
        answers.append(credit(merchant, invoice["id"], {"amount": "1.20", "reason": "goodwill", "refund": "none"}))

    threads = [threading.Thread(target=issue, args=(invoice,)) for invoice in opened]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [a.status for a in answers] == [201] * 5, answers
    assert sorted(a.json["number"] for a in answers) == [f"ODCN2026-{n:06d}" for n in range(1, 6)]
    # A refused credit note takes no number; a new year starts a new series.
    assert credit(merchant, opened[0]["id"], {"amount": "99.00", "reason": "goodwill", "refund": "none"}).status == 400
    clock.set(datetime(2027, 1, 5, tzinfo=UTC))
    next_year = credit(merchant, opened[0]["id"], {"amount": "1.00", "reason": "goodwill", "refund": "none"}).json
    assert next_year["number"] == "ODCN2027-000001"
    # Invoice numbers went on undisturbed.
    assert first_invoice(merchant, card=False, name="Labo 6")[2]["number"] == "OD2027-000001"


def test_void_and_draft_invoices_take_no_credit_note(merchant, clock):
    _, _, invoice = first_invoice(merchant, card=False)
    assert merchant.post(f"/invoices/{invoice['id']}/void").status == 200
    refused = credit(merchant, invoice["id"], {"amount": "1.00", "reason": "goodwill", "refund": "none"})
    assert refused.status == 409 and refused.json["error"]["code"] == "invalid_state"
    merchant_id = merchant.merchant["id"]
    draft = invoice_store.InvoiceRecord(
        *invoice_store.InvoiceRecord.key(merchant_id, "inv_draft01"), merchant_id=merchant_id,
        invoice_id="inv_draft01", status="draft", billing_reason="manual", customer_id=invoice["customer_id"],
        currency="EUR", invoice_date=iso(NOV_1), lines='[{"kind":"fee","description":"x","amount":"5.00"}]',
        tax="[]", subtotal="5.00", tax_amount="0.00", total="5.00", credit_applied="0.00", amount_due="5.00",
        amount_paid="0.00", starting_balance="0.00", ending_balance="0.00", created_at=iso(NOV_1),
    )
    assert invoice_store.save_draft(draft)
    refused = credit(merchant, "inv_draft01", {"amount": "1.00", "reason": "goodwill", "refund": "none"})
    assert refused.status == 409 and refused.json["error"]["code"] == "invalid_state"
    assert credit(merchant, "inv_nope", {"amount": "1.00", "reason": "goodwill", "refund": "none"}).status == 404


def test_the_pdf_is_a_credit_note_in_the_customers_language(merchant, clock, client):
    _, _, invoice = first_invoice(merchant, locale="fr")
    note = credit(merchant, invoice["id"], {"amount": "12.00", "reason": "goodwill", "refund": "card",
                                            "memo": "Geste pour le retard"}).json
    response = client.http.get(f"/credit-notes/{note['id']}/pdf",
                               headers={"Authorization": f"Bearer {merchant.key}", "Accept": "application/pdf"})
    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"] == "application/pdf"
    assert "ODCN2026-000001.pdf" in response.headers["Content-Disposition"]
    assert response.body.startswith(b"%PDF-")
    text = pdf_text(response.body)
    for expected in ("Avoir", "ODCN2026-000001", invoice["number"], "Optique Durand", "Labo Martin",
                     "Geste commercial", "Sur la carte", "TVA 20,0 %", "2,00", "12,00", "Geste pour le retard"):
        assert expected in text, expected
    refused = client.http.get(f"/credit-notes/{note['id']}/pdf",
                              headers={"Authorization": f"Bearer {merchant.key}", "Accept": "application/json"})
    assert refused.status_code == 400
    assert merchant.get("/credit-notes/cn_nope/pdf", headers={"Accept": "application/pdf"}).status == 404


def test_listing_by_customer_and_invoice_newest_first(merchant, new_merchant, clock):
    first_customer, sub, paid = first_invoice(merchant)
    other_customer, _, other = first_invoice(merchant, card=False, name="Autre")
    clock.set(DEC_1 + timedelta(minutes=1))
    bill(merchant, sub["id"])
    december = invoices_of(merchant, sub["id"])[-1]
    body = {"amount": "1.00", "reason": "goodwill", "refund": "none"}
    a = credit(merchant, paid["id"], body).json
    b = credit(merchant, other["id"], body).json
    c = credit(merchant, december["id"], body).json
    assert [n["id"] for n in merchant.get("/credit-notes").json["data"]] == [c["id"], b["id"], a["id"]]
    assert [n["id"] for n in merchant.get(f"/credit-notes?customer_id={first_customer}").json["data"]] == [
        c["id"], a["id"]]
    assert [n["id"] for n in merchant.get(f"/credit-notes?invoice_id={paid['id']}").json["data"]] == [a["id"]]
    assert [n["id"] for n in merchant.get(
        f"/credit-notes?invoice_id={other['id']}&customer_id={other_customer}").json["data"]] == [b["id"]]
    assert merchant.get(f"/credit-notes?invoice_id={other['id']}&customer_id={first_customer}").json["data"] == []
    assert merchant.get("/credit-notes?invoice_id=inv_nope").json["data"] == []
    page = merchant.get("/credit-notes?limit=2").json
    assert page["has_more"] is True and len(page["data"]) == 2
    rest = merchant.get(f"/credit-notes?limit=2&cursor={page['next_cursor']}").json
    assert rest["has_more"] is False and [n["id"] for n in rest["data"]] == [a["id"]]
    mine = merchant.get(f"/credit-notes?customer_id={first_customer}&limit=1").json
    assert merchant.get(f"/credit-notes?customer_id={first_customer}&limit=1&cursor={mine['next_cursor']}").json[
        "data"][0]["id"] == a["id"]
    assert merchant.get(f"/credit-notes/{b['id']}").json == b
    for query, param in [("customer_id=nope", "customer_id"), ("invoice_id=nope", "invoice_id"),
                         ("cursor=Zm9v", "cursor"), ("limit=0", "limit")]:
        bad = merchant.get(f"/credit-notes?{query}")
        assert bad.status == 400 and bad.json["error"]["param"] == param, (query, bad)
    stranger = new_merchant(name="Autre opticien", invoice_prefix="AO")
    assert stranger.get(f"/credit-notes/{a['id']}").status == 404
    assert stranger.get("/credit-notes").json["data"] == []
    assert stranger.post(f"/invoices/{paid['id']}/credit-notes", body).status == 404


@pytest.mark.parametrize("body, param", [
    ({"amount": "1.00", "reason": "nope", "refund": "none"}, "reason"),
    ({"amount": "1.00", "refund": "none"}, "reason"),
    ({"amount": "1.00", "reason": "goodwill"}, "refund"),
    ({"amount": "1.00", "reason": "goodwill", "refund": "cash"}, "refund"),
    ({"reason": "goodwill", "refund": "none"}, "lines"),
    ({"amount": "1.00", "lines": [{"invoice_line_id": "il_x_0", "amount": "1.00"}], "reason": "goodwill",
      "refund": "none"}, "amount"),
    ({"amount": 1, "reason": "goodwill", "refund": "none"}, "amount"),
    ({"amount": "0", "reason": "goodwill", "refund": "none"}, "amount"),
    ({"amount": "-1.00", "reason": "goodwill", "refund": "none"}, "amount"),
    ({"amount": "1.005", "reason": "goodwill", "refund": "none"}, "amount"),
    ({"amount": "1e3", "reason": "goodwill", "refund": "none"}, "amount"),
    ({"lines": [], "reason": "goodwill", "refund": "none"}, "lines"),
    ({"lines": [{"invoice_line_id": "line-1", "amount": "1.00"}], "reason": "goodwill", "refund": "none"},
     "lines[0].invoice_line_id"),
    ({"lines": [{"invoice_line_id": "il_x_0"}], "reason": "goodwill", "refund": "none"}, "lines[0].amount"),
    ({"amount": "1.00", "reason": "goodwill", "refund": "none", "memo": "x" * 501}, "memo"),
    ({"amount": "1.00", "reason": "goodwill", "refund": "none", "colour": "red"}, "colour"),
])
def test_bad_fields_are_a_400_naming_the_field(merchant, clock, body, param):
    _, _, invoice = first_invoice(merchant, card=False)
    response = credit(merchant, invoice["id"], body)
    assert response.status == 400 and response.json["error"]["param"] == param, response
    assert merchant.get(f"/invoices/{invoice['id']}").json["amount_credited"] == "0.00"
