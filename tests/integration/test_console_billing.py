"""The console's subscription and invoice pages (moto, localstripe, chalice's
test client): a change at the period end, pause and resume (and a pause
refused on the page), a cancellation with its reason in the history with
the member as actor, an option granted free (the upcoming invoice bills it
at 0; the API takes the same override), a credit granted, void (and the
contract's 409 once Stripe took the money), a credit note by line, a cash
payment recorded once despite a double submit, a payment link e-mailed,
the invoices list, a viewer refused, another merchant's ids not found.

Optique Durand's simple offer: base 49.00 + VAT 20% = 58.80 a month, an
express option at 30.00; plus is 79.00."""
from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest

from chalicelib.services import collecting
from tests.integration.console_client import OWNER, Browser
from tests.integration.test_alerts import mails_to
from tests.integration.test_billing import (
    CARD_DECLINED_ON_CHARGE, NOV_1, CrashAfterCharge, bill, invoices_of, iso, new_customer, simple_offer, subscribe,
)

ACTOR = f"user:{OWNER[0]}"
CUSTOMER_EMAIL = "compta@labo-martin.fr"

# Fixed before `shop`, so that the merchant is made at NOV_1 too.
pytestmark = pytest.mark.usefixtures("clock")


@pytest.fixture
def clock_start():
    return NOV_1


def text_of(browser, response) -> str:
    """The page as read: tags out, entities decoded, spaces folded."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", browser.text(response))).split())


def act(browser, page: str, action: str, fields: dict | None = None, *, token_of: str | None = None):
    """Open `page`, then post one of its forms (`action`) with the page's
    CSRF token and a one-time token of that form."""
    shown = browser.text(browser.get(page))
    form = shown[shown.index(f'action="{action}"'):]
    token = re.search(r'name="form_token" value="([^"]+)"', form).group(1)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', shown).group(1)
    return browser.post(action, {"csrf_token": csrf, "form_token": token_of or token, **(fields or {})})


def subscribed(shop, *, card=True, **fields) -> tuple[str, dict]:
    customer_id = new_customer(shop, card="4242424242424242" if card else None)
    offer_id = getattr(shop, "offer_id", None) or simple_offer(shop)
    shop.offer_id = offer_id
    return customer_id, subscribe(shop, customer_id, offer_id, **fields)


def done(answer, path: str, key: str) -> None:
    assert answer.status_code == 303, answer.body
    assert answer.headers["Location"] == f"{path}?done={key}"


def history(shop, subscription_id: str) -> list[dict]:
    return shop.get(f"/subscriptions/{subscription_id}/history?limit=100").json["data"]


# ---------------------------------------------------------------------------
# A subscription


def test_the_page_shows_the_subscription_and_a_change_at_the_period_end(browser, shop, clock):
    _, sub = subscribed(shop)
    plus = simple_offer(shop, code="plus", base="79.00")
    path = f"/console/subscriptions/{sub['id']}"
    page = browser.get(path)
    assert page.status_code == 200
    shown = text_of(browser, page)
    assert "simple · version 1" in shown and "Actif" in shown and "Labo Martin" in shown
    assert "Prochaine facture" in shown and "49,00 €" in shown
    assert f'href="/console/customers/{sub["customer_id"]}"' in browser.text(page)

    answer = act(browser, path, f"{path}/change", {"offer_id": plus, "effective": "period_end"})
    done(answer, path, "billing_done_change_scheduled")
    after = shop.get(f"/subscriptions/{sub['id']}").json
    assert after["offer_id"] == shop.offer_id and after["pending_change"]["offer_id"] == plus
    assert (history(shop, sub["id"])[-1]["type"], history(shop, sub["id"])[-1]["actor"]) == ("change_scheduled", ACTOR)
    upcoming = shop.get(f"/subscriptions/{sub['id']}/upcoming-invoice").json
    assert [(line["kind"], line["amount"]) for line in upcoming["lines"] if line["kind"] == "fee"] == [("fee", "79.00")]
    shown = text_of(browser, browser.get(f"{path}?done=billing_done_change_scheduled"))
    assert "Le changement est programmé pour la fin de la période." in shown
    assert "Changement prévu le 01/12/2026" in shown and "Offre : plus" in shown
    # Scheduling the current terms again removes the change.
    answer = act(browser, path, f"{path}/change", {"offer_id": shop.offer_id, "effective": "period_end"})
    done(answer, path, "billing_done_change_unscheduled")
    assert shop.get(f"/subscriptions/{sub['id']}").json["pending_change"] is None
    browser.post("/console/language", {"lang": "en", "next": path})
    english = text_of(browser, browser.get(path))
    assert "Upcoming invoice" in english and "Active" in english and "Offer: simple" not in english
    assert "€49.00" in english and "Change scheduled for the period end" in english


def test_pause_and_resume_and_a_pause_refused_on_the_page(browser, shop, clock):
    _, sub = subscribed(shop)
    path = f"/console/subscriptions/{sub['id']}"
    done(act(browser, path, f"{path}/pause"), path, "billing_done_paused")
    assert shop.get(f"/subscriptions/{sub['id']}").json["paused"] is True
    shown = text_of(browser, browser.get(path))
    assert "En pause" in shown and "Aucune facture à venir : l’abonnement est résilié ou en pause." in shown

    # Paused already (a second tab): the state refuses, the page says why.
    page = browser.get(path)
    csrf = browser.hidden(page, "csrf_token")
    refused = browser.post(f"{path}/pause", {"csrf_token": csrf, "form_token": "a-fresh-token-of-24-chars"})
    assert refused.status_code == 409
    assert "L’abonnement est déjà en pause." in text_of(browser, refused)

    done(act(browser, path, f"{path}/resume"), path, "billing_done_resumed")
    assert shop.get(f"/subscriptions/{sub['id']}").json["paused"] is False
    assert [(h["type"], h["actor"]) for h in history(shop, sub["id"])[-2:]] == [("paused", ACTOR), ("resumed", ACTOR)]


def test_a_cancellation_with_its_reason_is_in_the_history_with_the_member(browser, shop, clock):
    _, sub = subscribed(shop)
    path = f"/console/subscriptions/{sub['id']}"
    missing = act(browser, path, f"{path}/cancel", {"cancel_when": "period_end", "cancel_reason": ""})
    assert missing.status_code == 400 and "Choisissez un motif." in text_of(browser, missing)
    assert shop.get(f"/subscriptions/{sub['id']}").json["cancel_at_period_end"] is False

    answer = act(browser, path, f"{path}/cancel", {"cancel_when": "period_end", "cancel_reason": "moved_away",
                                                  "cancel_comment": "Part à Lyon"})
    done(answer, path, "billing_done_cancel_scheduled")
    after = shop.get(f"/subscriptions/{sub['id']}").json
    assert after["cancel_at_period_end"] is True and after["cancellation_comment"] == "moved_away: Part à Lyon"
    last = history(shop, sub["id"])[-1]
    assert (last["type"], last["actor"], last["reason"]) == ("cancellation_scheduled", ACTOR, "moved_away: Part à Lyon")
    shown = text_of(browser, browser.get(path))
    assert "Motif : Déménagement" in shown and "Commentaire : Part à Lyon" in shown
    assert f"{OWNER[0]} Résiliation programmée" in shown
    done(act(browser, path, f"{path}/reactivate"), path, "billing_done_reactivated")
    assert shop.get(f"/subscriptions/{sub['id']}").json["cancel_at_period_end"] is False


def test_an_option_granted_free_is_billed_at_zero_on_the_next_invoice(browser, shop, clock):
    _, sub = subscribed(shop)
    clock.set(NOV_1 + timedelta(days=9))
    browser.sign_in(*OWNER)  # a session lasts hours, not days
    path = f"/console/subscriptions/{sub['id']}"
    no_reason = act(browser, path, f"{path}/free-option", {"free_option": "express", "free_effective": "immediately"})
    assert no_reason.status_code == 400 and "Indiquez le motif" in text_of(browser, no_reason)

    answer = act(browser, path, f"{path}/free-option", {"free_option": "express", "free_effective": "immediately",
                                                       "free_reason": "Technicien venu en retard"})
    done(answer, path, "billing_done_option_free")
    after = shop.get(f"/subscriptions/{sub['id']}").json
    assert after["options"] == ["express"] and after["price_overrides"] == {"express": {"amount": "0.00"}}
    # The change by the member, then the invoice it made (the unused days credited), by the system.
    *_, last, invoiced = history(shop, sub["id"])
    assert (last["type"], last["actor"], last["reason"]) == ("changed", ACTOR, "Technicien venu en retard")
    assert last["after"]["price_overrides"] == {"express": {"amount": "0.00"}}
    assert (invoiced["type"], invoiced["actor"]) == ("invoiced", "system")
    upcoming = shop.get(f"/subscriptions/{sub['id']}/upcoming-invoice").json
    fees = [(line["kind"], line["component"], line["amount"]) for line in upcoming["lines"]
            if line["kind"] in ("fee", "option")]
    assert fees == [("fee", "base", "49.00"), ("option", "express", "0.00")]
    shown = text_of(browser, browser.get(path))
    assert "simple – Option 4h on-site" in shown and "4h on-site offerte" in shown
    assert "Motif : Technicien venu en retard" in shown
    assert "Options : – → 4h on-site" in shown  # the history names the option, not its code
    # Free already: nothing more to grant.
    assert "Toutes les options de l’offre sont déjà offertes." in shown


def test_the_api_takes_an_option_override_too(shop, clock):
    customer_id = new_customer(shop)
    offer_id = simple_offer(shop)
    sub = subscribe(shop, customer_id, offer_id, options=["express"], price_overrides={"express": {"amount": "12.00"}})
    [first] = invoices_of(shop, sub["id"])
    assert [(line["kind"], line["amount"]) for line in first["lines"]] == [("fee", "49.00"), ("option", "12.00")]
    for overrides, param in [({"express": {"name": "Free"}}, "price_overrides.express.name"),
                             ({"express": {"amount": "-1"}}, "price_overrides.express.amount"),
                             ({"gold": {"amount": "0"}}, "price_overrides.gold")]:
        refused = shop.post("/subscriptions", {"customer_id": customer_id, "offer_id": offer_id,
                                               "options": ["express"], "price_overrides": overrides})
        assert refused.status == 400 and refused.json["error"]["param"] == param, refused
    changed = shop.post(f"/subscriptions/{sub['id']}/change", {
        "price_overrides": {"express": {"amount": "0.00"}}, "effective": "period_end", "reason": "a gesture"})
    assert changed.status == 200 and changed.json["pending_change"]["price_overrides"] == {"express": {"amount": "0.00"}}
    assert history(shop, sub["id"])[-1]["reason"] == "a gesture"


def test_a_credit_granted_goes_to_the_credit_balance(browser, shop, clock):
    customer_id, sub = subscribed(shop)
    [invoice] = invoices_of(shop, sub["id"])
    assert (invoice["status"], invoice["total"]) == ("paid", "58.80")
    path = f"/console/subscriptions/{sub['id']}"
    answer = act(browser, path, f"{path}/credit", {"credit_amount": "10,00", "credit_reason": "Panne du 3 novembre",
                                                  "credit_invoice_id": invoice["id"]})
    done(answer, path, "billing_done_credit")
    [note] = shop.get(f"/credit-notes?invoice_id={invoice['id']}").json["data"]
    assert (note["reason"], note["refund"], note["total"], note["memo"]) == (
        "goodwill", "credit_balance", "10.00", "Panne du 3 novembre")
    assert shop.get(f"/customers/{customer_id}").json["credit_balance"] == "10.00"
    # Without a paid invoice, the form says why there is no credit to grant.
    _, unpaid = subscribed(shop, card=False)
    shown = text_of(browser, browser.get(f"/console/subscriptions/{unpaid['id']}"))
    assert "Pas d’avoir possible : le client n’a encore aucune facture payée" in shown


# ---------------------------------------------------------------------------
# Invoices


def test_the_invoice_page_and_void(browser, shop, clock):
    _, sub = subscribed(shop, card=False)
    [invoice] = invoices_of(shop, sub["id"])
    path = f"/console/invoices/{invoice['id']}"
    page = browser.get(path)
    assert page.status_code == 200
    shown = text_of(browser, page)
    assert f"Facture {invoice['number']}" in shown and "À payer" in shown and "58,80 €" in shown
    assert f'href="/console/invoices/{invoice["id"]}/pdf"' in browser.text(page)
    assert browser.get(f"{path}/pdf", headers={"Accept": "application/pdf"}).headers["Content-Type"] == "application/pdf"
    done(act(browser, path, f"{path}/void"), path, "billing_done_voided")
    assert shop.get(f"/invoices/{invoice['id']}").json["status"] == "void"
    assert "Annulée" in text_of(browser, browser.get(path))


def test_retrying_the_card_now_says_when_it_is_declined(browser, shop, clock):
    customer_id = new_customer(shop, card=CARD_DECLINED_ON_CHARGE)
    sub = subscribe(shop, customer_id, simple_offer(shop))
    [invoice] = invoices_of(shop, sub["id"])
    assert invoice["status"] == "open" and invoice["payment_attempts"][-1]["status"] == "failed"
    path = f"/console/invoices/{invoice['id']}"
    declined = act(browser, path, f"{path}/pay")
    assert declined.status_code == 402
    assert "La carte a été refusée (card_declined)" in text_of(browser, declined)
    after = shop.get(f"/invoices/{invoice['id']}").json
    assert after["status"] == "open" and len(after["payment_attempts"]) == 2


def test_a_void_once_stripe_took_the_money_is_the_contracts_409_on_the_page(browser, shop, clock):
    customer_id, sub = subscribed(shop, start_at=iso(NOV_1))
    clock.set(NOV_1 + timedelta(days=30))
    collecting.use_gateway(CrashAfterCharge())
    try:
        bill(shop, sub["id"])
    except SystemExit:
        pass
    finally:
        collecting.use_gateway(None)
    december = invoices_of(shop, sub["id"])[-1]
    assert december["status"] == "open" and december["payment_attempts"][0]["status"] == "pending"
    clock.set(clock.now() + collecting.LEASE + timedelta(minutes=1))
    browser.sign_in(*OWNER)  # a session lasts hours, not days
    path = f"/console/invoices/{december['id']}"
    refused = act(browser, path, f"{path}/void")
    assert refused.status_code == 409
    assert "Stripe a déjà encaissé le paiement de cette facture" in text_of(browser, refused)
    assert shop.get(f"/invoices/{december['id']}").json["status"] == "paid"


def test_a_credit_note_by_line_lowers_the_amount_due(browser, shop, clock):
    _, sub = subscribed(shop, card=False)
    [invoice] = invoices_of(shop, sub["id"])
    path = f"/console/invoices/{invoice['id']}"
    too_much = act(browser, path, f"{path}/credit-note", {"cn_amount": "100", "cn_reason": "goodwill",
                                                         "cn_refund": "none"})
    assert too_much.status_code == 400 and 'name="cn_amount"' in browser.text(too_much)
    assert re.search(r'name="cn_amount" [^>]*aria-invalid="true"', browser.text(too_much))
    answer = act(browser, path, f"{path}/credit-note", {"lines[0].amount": "10,00", "cn_reason": "order_change",
                                                       "cn_refund": "none", "cn_memo": "monture plus simple"})
    done(answer, path, "billing_done_credit_note")
    after = shop.get(f"/invoices/{invoice['id']}").json
    # 10.00 before tax + 20% VAT = 12.00 off the 58.80 due.
    assert (after["amount_due"], after["amount_credited"]) == ("46.80", "12.00")
    [note] = after["credit_notes"]
    shown = text_of(browser, browser.get(path))
    assert note["number"] in shown and "12,00 €" in shown


def test_a_cash_payment_is_recorded_once_despite_a_double_submit(browser, shop, clock):
    _, sub = subscribed(shop, card=False)
    [invoice] = invoices_of(shop, sub["id"])
    path = f"/console/invoices/{invoice['id']}"
    shown = browser.text(browser.get(path))
    form = shown[shown.index(f'action="{path}/payment"'):]
    fields = {"csrf_token": browser.hidden(browser.get(path), "csrf_token"),
              "form_token": re.search(r'name="form_token" value="([^"]+)"', form).group(1),
              "pay_method": "cash", "pay_amount": "58,80", "pay_reference": "caisse 2"}
    first, second = browser.post(f"{path}/payment", fields), browser.post(f"{path}/payment", fields)
    done(first, path, "billing_done_payment")
    done(second, path, "billing_done_payment")
    after = shop.get(f"/invoices/{invoice['id']}").json
    assert after["status"] == "paid" and after["amount_due"] == "0.00"
    assert [(p["method"], p["amount"], p["reference"]) for p in after["payments"]] == [("cash", "58.80", "caisse 2")]
    assert shop.get(f"/subscriptions/{sub['id']}").json["status"] == "active"


def test_the_payment_link_is_e_mailed_to_the_customer_once(browser, shop, clock):
    customer_id, sub = subscribed(shop, card=False)
    [invoice] = invoices_of(shop, sub["id"])
    path = f"/console/invoices/{invoice['id']}"
    shown = browser.text(browser.get(path))
    form = shown[shown.index(f'action="{path}/payment-link"'):]
    fields = {"csrf_token": browser.hidden(browser.get(path), "csrf_token"),
              "form_token": re.search(r'name="form_token" value="([^"]+)"', form).group(1)}
    done(browser.post(f"{path}/payment-link", fields), path, "billing_done_link_sent")
    done(browser.post(f"{path}/payment-link", fields), path, "billing_done_link_sent")
    [mail] = mails_to(CUSTOMER_EMAIL)
    assert mail["subject"] == f"Facture {invoice['number']} de Optique Durand : 58,80 € à régler par carte"
    assert re.search(r"https?://\S+/pay/\S+", mail["text"])
    # It is among the customer's e-mails, and no open alert.
    from chalicelib.services import alerts

    merchant_id = shop.merchant["id"]
    assert [(m["audience"], m["status"]) for m in alerts.customer_emails(merchant_id, customer_id)
            if m["type"] == "payment_link"] == [("customer", "sent")]
    assert "payment_link" not in [a["type"] for a in alerts.open_alerts(merchant_id, customer_id)]
    # From the subscription page too, about its unpaid first invoice.
    sub_path = f"/console/subscriptions/{sub['id']}"
    done(act(browser, sub_path, f"{sub_path}/payment-link"), sub_path, "billing_done_link_sent")
    assert len(mails_to(CUSTOMER_EMAIL)) == 2


def test_the_invoices_list_filters_by_status_and_names_the_customers(browser, shop, clock):
    _, paid = subscribed(shop)
    _, unpaid = subscribed(shop, card=False)
    [paid_invoice], [open_invoice] = invoices_of(shop, paid["id"]), invoices_of(shop, unpaid["id"])
    listed = browser.text(browser.get("/console/invoices"))
    assert paid_invoice["number"] in listed and open_invoice["number"] in listed and "Labo Martin" in listed
    only_open = browser.text(browser.get("/console/invoices?status=open"))
    assert open_invoice["number"] in only_open and paid_invoice["number"] not in only_open
    assert f'href="/console/invoices/{open_invoice["id"]}"' in only_open
    assert browser.get("/console/invoices?status=bogus").status_code == 400


# ---------------------------------------------------------------------------
# Roles and tenancy


def test_a_viewer_reads_and_is_refused_every_action(client, shop, clock):
    _, sub = subscribed(shop, card=False)
    [invoice] = invoices_of(shop, sub["id"])
    assert shop.post("/merchant/users", {"email": "stagiaire@optique-durand.fr", "role": "viewer",
                                         "password": "Viewer-pass-2026"}).status == 201
    viewer = Browser(client)
    assert viewer.sign_in("stagiaire@optique-durand.fr", "Viewer-pass-2026").status_code == 303
    page = viewer.get(f"/console/subscriptions/{sub['id']}")
    assert page.status_code == 200 and "Votre rôle permet de consulter, pas de modifier." in text_of(viewer, page)
    csrf = viewer.hidden(page, "csrf_token")
    for action in (f"/console/subscriptions/{sub['id']}/pause", f"/console/subscriptions/{sub['id']}/cancel",
                   f"/console/invoices/{invoice['id']}/void", f"/console/invoices/{invoice['id']}/payment"):
        refused = viewer.post(action, {"csrf_token": csrf, "form_token": "a-fresh-token-of-24-chars",
                                       "cancel_when": "now", "cancel_reason": "other", "pay_method": "cash",
                                       "pay_amount": "1.00"})
        assert refused.status_code == 403, action
    assert shop.get(f"/invoices/{invoice['id']}").json["status"] == "open"
    assert shop.get(f"/subscriptions/{sub['id']}").json["status"] == "incomplete"


def test_another_merchants_subscription_and_invoice_are_not_found(browser, shop, new_merchant, clock):
    other = new_merchant(name="Optique Ouest", invoice_prefix="OO", owner_email="owner@ouest.fr",
                         owner_password="Other-pass-2026")
    _, sub = subscribed(other, card=False)
    [invoice] = invoices_of(other, sub["id"])
    for path in (f"/console/subscriptions/{sub['id']}", f"/console/invoices/{invoice['id']}",
                 "/console/subscriptions/sub_00000000000000000000000000", "/console/invoices/nope"):
        assert browser.get(path).status_code == 404, path
    csrf = browser.csrf()
    for n, action in enumerate((f"/console/subscriptions/{sub['id']}/pause", f"/console/invoices/{invoice['id']}/void")):
        answer = browser.post(action, {"csrf_token": csrf, "form_token": f"a-fresh-token-of-24-chars-{n}"})
        assert answer.status_code == 404, action
    assert other.get(f"/subscriptions/{sub['id']}").json["paused"] is False
    assert other.get(f"/invoices/{invoice['id']}").json["status"] == "open"
