"""The alerts' e-mails rendered in both languages: subjects that say what
happened and for whom, amounts and dates as the recipient reads them, the
HTML escaped, and a card never named beyond its brand and last four digits."""
from __future__ import annotations

from html.parser import HTMLParser

import pytest

from chalicelib.services.alert_mail import KINDS, render

CARD = {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2026}
COMMON = {"merchant_name": "Optique Durand", "customer_name": "Labo Martin", "customer_id": "cus_01",
          "subscription_id": "sub_01"}
CONTEXTS = {
    "card_expiring": {"card": CARD, "link_url": "https://billing.example.com/pay/tok",
                      "link_expires_at": "2026-11-30T06:00:00Z"},
    "card_expiring_digest": {"day": "2026-11-23", "cards": [
        {"customer_name": "Labo Martin", "customer_email": "compta@labo-martin.fr", "customer_id": "cus_01",
         "card": CARD},
        {"customer_name": "Optic Ouest", "customer_email": "o@ouest.fr", "customer_id": "cus_02",
         "card": {**CARD, "brand": "mastercard", "last4": "4444", "exp_month": 11}}]},
    "cancellation_scheduled": {"offer_name": "Clic&O Neksia", "cancel_at": "2026-11-30T23:00:00Z",
                               "reason": "customer", "comment": "moving"},
    "subscription_canceled": {"offer_name": "Clic&O Neksia", "canceled_at": "2026-11-30T23:00:00Z",
                              "reason": "commitment_end", "comment": None},
    "payment_failed": {"invoice_id": "inv_01", "invoice_number": "OD2026-000123", "amount": "1234.5",
                       "currency": "EUR", "failure_code": "insufficient_funds", "attempt": 2,
                       "next_payment_attempt": "2026-11-25T06:00:00Z",
                       "payment_link": "https://billing.example.com/pay/tok"},
    "counter_reset": {"device_id": "neksia-0042", "meter": "montages", "previous": "12345", "value": "3",
                      "seq": 1042, "ts": "2026-11-22T10:00:00Z"},
    "payment_link": {"invoice_number": "OD2026-000123", "amount_due": "58.8", "currency": "EUR",
                     "link_url": "https://billing.example.com/pay/tok", "link_expires_at": "2026-11-30T06:00:00Z"},
    "portal_link": {"link_url": "https://billing.example.com/portal/tok", "link_expires_at": "2026-11-30T07:00:00Z"},
    "statement_issued": {"payee_name": "Réseau Vision", "number": "ODST2026-000001", "month": "2026-11",
                         "totals": {"EUR": "123.4"}},
    "price_change_notice": {"offer_name": "Clic&O Neksia", "effective_at": "2027-01-01T00:00:00Z",
                            "currency": "JPY", "subscription_id": "sub_01"},
}
SUBJECTS = {
    ("card_expiring", "fr"): "Votre carte Visa •••• 4242 expire après 12/2026 : mettez-la à jour pour Optique Durand",
    ("card_expiring", "en"): "Your Visa •••• 4242 card expires after 12/2026: update it for Optique Durand",
    ("card_expiring_digest", "fr"): "Cartes qui expirent : 2 clients de Optique Durand (23/11/2026)",
    ("card_expiring_digest", "en"): "Expiring cards: 2 customers of Optique Durand (2026-11-23)",
    ("cancellation_scheduled", "fr"):
        "Résiliation programmée : l'abonnement Clic&O Neksia de Labo Martin prend fin le 01/12/2026",
    ("cancellation_scheduled", "en"):
        "Cancellation scheduled: Labo Martin's Clic&O Neksia subscription ends on 2026-12-01",
    ("subscription_canceled", "fr"): "Abonnement résilié (fin de l'engagement) : Labo Martin, Clic&O Neksia",
    ("subscription_canceled", "en"): "Subscription canceled (end of commitment): Labo Martin, Clic&O Neksia",
    ("payment_failed", "fr"): "Échec de paiement : 1 234,50 € pour Labo Martin (facture OD2026-000123)",
    ("payment_failed", "en"): "Payment failed: €1,234.50 for Labo Martin (invoice OD2026-000123)",
    ("counter_reset", "fr"): "Remise à zéro du compteur montages sur neksia-0042 chez Labo Martin",
    ("counter_reset", "en"): "Counter reset on neksia-0042 (montages) for Labo Martin",
    ("payment_link", "fr"): "Facture OD2026-000123 de Optique Durand : 58,80 € à régler par carte",
    ("payment_link", "en"): "Optique Durand invoice OD2026-000123: €58.80 to pay by card",
    ("portal_link", "fr"): "Votre espace client Optique Durand",
    ("portal_link", "en"): "Your Optique Durand customer account",
    ("statement_issued", "fr"): "Relevé de commissions ODST2026-000001 de Optique Durand pour 2026-11",
    ("statement_issued", "en"): "Optique Durand commission statement ODST2026-000001 for 2026-11",
    ("price_change_notice", "fr"): "Nouveaux tarifs de votre abonnement Clic&O Neksia à partir du 01/01/2027",
    ("price_change_notice", "en"): "New prices for your Clic&O Neksia subscription from 2027-01-01",
}
# What the body must say, beyond the subject.
BODIES = {
    ("card_expiring", "fr"): ["https://billing.example.com/pay/tok", "valable jusqu'au 30/11/2026"],
    ("card_expiring", "en"): ["https://billing.example.com/pay/tok", "valid until 2026-11-30"],
    ("card_expiring_digest", "fr"): ["Labo Martin <compta@labo-martin.fr> (cus_01) : Visa •••• 4242",
                                     "Mastercard •••• 4444, valable jusqu'à fin 11/2026"],
    ("card_expiring_digest", "en"): ["Labo Martin <compta@labo-martin.fr> (cus_01): Visa •••• 4242",
                                     "Mastercard •••• 4444, valid until 11/2026"],
    ("cancellation_scheduled", "fr"): ["Motif : à la demande du client (moving)", "sub_01"],
    ("cancellation_scheduled", "en"): ["Reason: at the customer's request (moving)", "sub_01"],
    ("subscription_canceled", "fr"): ["résilié le 01/12/2026", "Motif : fin de l'engagement"],
    ("subscription_canceled", "en"): ["canceled on 2026-12-01", "Reason: end of commitment"],
    ("payment_failed", "fr"): ["tentative 2", "Motif : provision insuffisante", "Prochaine tentative : 25/11/2026"],
    ("payment_failed", "en"): ["attempt 2", "Reason: insufficient funds", "Next retry: 2026-11-25"],
    ("counter_reset", "fr"): ["est revenu de 12345 à 3", "relevé 1042 du 22/11/2026"],
    ("counter_reset", "en"): ["went back from 12345 to 3", "reading 1042 of 2026-11-22"],
    ("payment_link", "fr"): ["Bonjour Labo Martin", "https://billing.example.com/pay/tok",
                             "valable jusqu'au 30/11/2026"],
    ("payment_link", "en"): ["Hello Labo Martin", "https://billing.example.com/pay/tok", "valid until 2026-11-30"],
    ("portal_link", "fr"): ["Bonjour Labo Martin", "https://billing.example.com/portal/tok", "valable une heure"],
    ("portal_link", "en"): ["Hello Labo Martin", "https://billing.example.com/portal/tok", "valid for one hour"],
    ("statement_issued", "fr"): ["Bonjour Réseau Vision", "ODST2026-000001", "123,40 €"],
    ("statement_issued", "en"): ["Hello Réseau Vision", "ODST2026-000001", "€123.40"],
    ("price_change_notice", "fr"): ["Bonjour Labo Martin", "premier renouvellement", "en JPY", "sub_01"],
    ("price_change_notice", "en"): ["Hello Labo Martin", "first renewal", "in JPY", "sub_01"],
}


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)


def visible(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


@pytest.mark.parametrize("language", ["fr", "en"])
@pytest.mark.parametrize("kind", KINDS)
def test_each_mail_in_each_language(kind, language):
    mail = render(kind, "fr-FR" if language == "fr" else "en-GB", {**COMMON, **CONTEXTS[kind]},
                  timezone="Europe/Paris")
    assert mail.subject == SUBJECTS[kind, language]
    for expected in BODIES[kind, language]:
        assert expected in mail.text, (expected, mail.text)
    assert mail.html.startswith("<!doctype html>") and f'<html lang="{language}">' in mail.html
    shown = visible(mail.html)
    assert "Optique Durand" in shown and "{{" not in mail.html + mail.text
    assert "•••• 4242" in shown or kind not in ("card_expiring", "card_expiring_digest")


def test_a_locale_other_than_french_reads_english():
    mail = render("counter_reset", "de", {**COMMON, **CONTEXTS["counter_reset"]})
    assert mail.subject.startswith("Counter reset")


def test_amounts_follow_the_currency_and_language():
    context = {**COMMON, **CONTEXTS["payment_failed"], "amount": "98765", "currency": "JPY"}
    assert "98 765 JPY" in render("payment_failed", "fr", context).subject
    assert "98,765 JPY" in render("payment_failed", "en", context).subject


def test_names_are_escaped_in_html_and_plain_in_text():
    context = {**COMMON, **CONTEXTS["cancellation_scheduled"], "customer_name": "Dupont & <Fils>"}
    mail = render("cancellation_scheduled", "en", context)
    assert "Dupont &amp; &lt;Fils&gt;" in mail.html and "<Fils>" not in mail.html
    assert "Dupont & <Fils>" in mail.text


def test_no_retry_left_says_so():
    context = {**COMMON, **CONTEXTS["payment_failed"], "next_payment_attempt": None, "payment_link": None}
    assert "No retry left: the invoice is uncollectible and the subscription is canceled." in \
        render("payment_failed", "en", context).text
    assert "aucune : facture irrécouvrable" in visible(render("payment_failed", "fr", context).html)


def test_a_payment_link_without_an_invoice_asks_for_a_card():
    context = {**COMMON, "invoice_number": None, "amount_due": None, "currency": None,
               "link_url": "https://billing.example.com/pay/tok", "link_expires_at": "2026-11-30T06:00:00Z"}
    mail = render("payment_link", "fr", context, timezone="Europe/Paris")
    assert mail.subject == "Enregistrez votre carte de paiement pour Optique Durand"
    assert "https://billing.example.com/pay/tok" in mail.text and "Facture" not in mail.text
    assert render("payment_link", "en", context).subject == "Save your payment card for Optique Durand"
