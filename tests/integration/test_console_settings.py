"""The console's reports and settings (moto, chalice's test client): the
month's figures, usage and charts, the invoice CSV the same as the API's;
the merchant's settings changed by an owner with errors beside their
fields, refused to staff and viewers; API keys created and revoked; staff
added and removed, the last owner kept."""
from __future__ import annotations

import csv
import gzip
import io
import re

import pytest
from pydantic import BaseModel

from tests.integration.console_client import OWNER, Browser, error_beside, member
from tests.integration.table_stream import billing_table_stream

OFFER = {"code": "neksia", "name": "Clic&O Neksia", "currency": "EUR", "billing_interval": "month",
         "components": [{"code": "base", "type": "flat", "amount": "49.00"},
                        {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"}]}


pytestmark = pytest.mark.usefixtures("console_clock")


def rows_of(body: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))


# ---------------------------------------------------------------------------
# Reports


@pytest.fixture
def november(shop):
    """A customer subscribed on 2 Nov (no card: its first invoice, 58.80, stays open) who made 12 montages."""
    from app import report_feed

    offer_id = shop.post("/offers", OFFER).json["id"]
    customer_id = shop.post("/customers", {"name": "Labo Martin", "email": "compta@labo-martin.fr",
                                           "country": "FR"}).json["id"]
    subscription = shop.post("/subscriptions", {"customer_id": customer_id, "offer_id": offer_id}).json
    used = shop.post("/usage", {"events": [{"event_id": "call-1", "subscription_id": subscription["id"],
                                            "meter": "montages", "quantity": "12",
                                            "timestamp": "2026-11-02T09:00:00Z"}]})
    assert used.status == 200, used
    billing_table_stream().deliver(report_feed)
    return subscription


def test_the_reports_page_shows_the_month_its_usage_and_twelve_months(browser, november):
    page = browser.get("/console/reports?month=2026-11")
    assert page.status_code == 200
    text = browser.text(page)
    assert "Chiffres du mois en EUR" in text
    assert "58,80 €" in text  # invoiced and outstanding
    assert "<td>montages</td><td class=\"num\">12</td>" in text
    assert text.count('<figure class="chart"') == 3 and "10/26" in text and "11/26" in text
    assert 'href="/console/exports/invoices.csv?month=2026-11"' in text
    assert '<progress id="export-progress"' in text and 'id="export-range" hidden' in text
    assert 'name="from" type="month" value="2025-12"' in text
    # Today's month by default, where the merchant is.
    assert "Rapports · 2026-11" in browser.text(browser.get("/console/reports"))
    refused = browser.get("/console/reports?month=2026-13")
    assert refused.status_code == 400
    assert error_beside(browser, refused, "month").startswith("Choisissez un mois")


def test_the_csv_export_is_the_apis(client, browser, shop, november):
    api = client.http.get("/exports/invoices.csv?month=2026-11",
                          headers={"Authorization": f"Bearer {shop.key}", "Accept": "text/csv"})
    assert api.status_code == 200
    expected = rows_of(api.body)
    assert len(expected) == 1 and expected[0]["gross_amount"] == "58.80"
    plain = browser.get("/console/exports/invoices.csv?month=2026-11", headers={"Accept": "text/csv"})
    assert plain.status_code == 200, plain.body
    assert plain.headers["Content-Type"].startswith("text/csv")
    assert plain.headers["Content-Disposition"] == 'attachment; filename="invoices-2026-11.csv"'
    assert rows_of(plain.body) == expected
    zipped = browser.get("/console/exports/invoices.csv?month=2026-11",
                         headers={"Accept": "text/csv", "Accept-Encoding": "gzip, deflate"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert rows_of(gzip.decompress(zipped.body)) == expected
    empty = browser.get("/console/exports/invoices.csv?month=2026-10", headers={"Accept": "text/csv"})
    assert empty.status_code == 200 and empty.body.decode().count("\n") == 1  # the header line only
    assert browser.get("/console/exports/invoices.csv?month=11-2026", headers={"Accept": "*/*"}).status_code == 400
    signed_out = client.http.get("/console/exports/invoices.csv?month=2026-11", headers={"Accept": "text/csv"})
    assert signed_out.status_code == 303


# ---------------------------------------------------------------------------
# The merchant's settings


def settings_fields(browser, page, **changes) -> dict:
    fields = {"csrf_token": browser.hidden(page, "csrf_token"), "name": "Optique Durand",
              "default_currency": "EUR", "alert_emails": "ops@optique-durand.fr", "invoice_prefix": "OD",
              "dunning_retry_days": "1, 3, 5, 7", "locale": "fr", "timezone": "Europe/Paris",
              "tax_rates[0].key": "DE", "tax_rates[0].value": "19.0",
              "tax_rates[1].key": "FR", "tax_rates[1].value": "20.0"}
    fields.update(changes)
    return fields


def test_the_settings_page_shows_every_field_of_the_merchant(browser):
    from chalicelib.api.merchants import MerchantFields

    page = browser.get("/console/settings")
    assert page.status_code == 200
    text = browser.text(page)
    for name in MerchantFields.model_fields:
        assert re.search(rf'name="{name}(\[0\]\.key|\.[a-z_0-9]+)?"', text), name
    assert 'name="tax_rates[1].value" type="text" value="20.0"' in text
    assert 'name="dunning_retry_days" type="text" value="1, 3, 5, 7"' in text
    assert "owner@optique-durand.fr" in text and "dernier propriétaire" in text


def test_the_owner_changes_the_settings_after_fixing_errors(browser, shop):
    page = browser.get("/console/settings")
    refused = browser.post("/console/settings", settings_fields(
        browser, page, alert_emails="ops@optique-durand.fr, pas-une-adresse", dunning_retry_days="5, 3",
        timezone="Mars/Olympus", name="",
        **{"tax_rates[0].value": "120", "tax_rates[2].key": "Espagne", "tax_rates[2].value": "21"}))
    assert refused.status_code == 400
    assert error_beside(browser, refused, "alert_emails").startswith("Saisissez des adresses e-mail")
    assert error_beside(browser, refused, "dunning_retry_days").startswith("Saisissez des nombres de jours croissants")
    assert error_beside(browser, refused, "timezone").startswith("Saisissez un fuseau horaire")
    assert error_beside(browser, refused, "name").startswith("Ce champ ne peut pas être vidé")
    assert error_beside(browser, refused, "tax_rates[0].value").startswith("Saisissez un taux de 0 à 100")
    assert error_beside(browser, refused, "tax_rates[2].key").startswith("Saisissez le code du pays")
    assert error_beside(browser, refused, "tax_rates[1].value") is None
    assert 'value="Mars/Olympus"' in browser.text(refused) and 'value="Espagne"' in browser.text(refused)
    assert shop.get("/merchant").json["timezone"] == "Europe/Paris"

    saved = browser.post("/console/settings", settings_fields(
        browser, refused, name="Optique Durand & Fils", alert_emails="ops@optique-durand.fr; compta@optique-durand.fr",
        dunning_retry_days="2, 4, 8", locale="en", timezone="Europe/Brussels",
        **{"tax_rates[0].value": "5,5", "tax_rates[2].key": "es", "tax_rates[2].value": "21"}))
    assert saved.status_code == 303 and saved.headers["Location"] == "/console/settings?done=settings_saved"
    merchant = shop.get("/merchant").json
    assert merchant["name"] == "Optique Durand & Fils"
    assert merchant["alert_emails"] == ["ops@optique-durand.fr", "compta@optique-durand.fr"]
    assert merchant["dunning_retry_days"] == [2, 4, 8]
    assert merchant["tax_rates"] == {"DE": "5.5", "FR": "20.0", "ES": "21"}
    assert (merchant["locale"], merchant["timezone"], merchant["invoice_prefix"]) == ("en", "Europe/Brussels", "OD")
    assert "Les paramètres sont enregistrés." in browser.text(browser.get(saved.headers["Location"]))
    # A row added without a script: the page again, one more row, nothing saved.
    page = browser.get("/console/settings")
    grown = browser.post("/console/settings", {**settings_fields(browser, page), "add_row": "tax_rates"})
    assert grown.status_code == 200 and 'name="tax_rates[2].key" type="text" value=""' in browser.text(grown)
    assert shop.get("/merchant").json["tax_rates"] == {"DE": "5.5", "FR": "20.0", "ES": "21"}


@pytest.mark.parametrize("role", ["staff", "viewer"])
def test_staff_and_viewers_see_the_settings_and_cannot_change_them(client, shop, role):
    someone = member(client, shop, role)
    page = someone.get("/console/settings")
    assert page.status_code == 200
    text = someone.text(page)
    assert "Seul un propriétaire du compte peut changer ces paramètres" in text
    assert '<fieldset class="card" disabled>' in text and "/console/settings/api-keys/revoke" not in text
    csrf = someone.csrf()
    for path, fields in [("/console/settings", {"name": "Pirate"}), ("/console/settings/api-keys", {}),
                         ("/console/settings/api-keys/revoke", {"prefix": shop.key[:11]}),
                         ("/console/settings/staff", {"email": "x@y.fr", "role": "owner", "password": "Pirate-2026"}),
                         ("/console/settings/staff/remove", {"email": OWNER[0]})]:
        answer = someone.post(path, {"csrf_token": csrf, **fields})
        assert answer.status_code == 403, path
    merchant = shop.get("/merchant").json
    assert merchant["name"] == "Optique Durand" and len(merchant["api_keys"]) == 1
    assert {m["email"] for m in shop.get("/merchant/users").json["data"]} == {OWNER[0], f"{role}@optique-durand.fr"}


def test_an_api_key_is_created_shown_once_and_revoked(client, browser, shop):
    created = browser.post("/console/settings/api-keys", {"csrf_token": browser.csrf()})
    assert created.status_code == 200
    key = re.search(r'<code id="new-key">(sk_[A-Za-z0-9_-]+)</code>', browser.text(created)).group(1)
    assert "elle ne sera plus jamais affichée" in browser.text(created)
    assert shop.as_key(key).get("/merchant").status == 200
    page = browser.text(browser.get("/console/settings"))
    assert key not in page and f"<code>{key[:11]}…</code>" in page
    revoked = browser.post("/console/settings/api-keys/revoke", {"csrf_token": browser.csrf(), "prefix": key[:11]})
    assert revoked.status_code == 303 and revoked.headers["Location"] == "/console/settings?done=settings_key_revoked"
    assert shop.as_key(key).get("/merchant").status == 401
    last = browser.post("/console/settings/api-keys/revoke", {"csrf_token": browser.csrf(), "prefix": shop.key[:11]})
    assert last.status_code == 400 and "C’est la dernière clé du compte" in browser.text(last)
    assert shop.get("/merchant").status == 200
    unknown = browser.post("/console/settings/api-keys/revoke", {"csrf_token": browser.csrf(), "prefix": "sk_unknown0"})
    assert unknown.status_code == 404


def test_a_staff_member_is_added_and_removed_and_the_last_owner_stays(client, browser, shop):
    csrf = browser.csrf()
    bad = browser.post("/console/settings/staff", {"csrf_token": csrf, "email": "vendeur", "role": "staff",
                                                   "password": ""})
    assert bad.status_code == 400
    assert error_beside(browser, bad, "email").startswith("Saisissez une adresse e-mail")
    assert error_beside(browser, bad, "password") == "Choisissez un mot de passe pour ce membre"
    assert 'value="vendeur"' in browser.text(bad)
    added = browser.post("/console/settings/staff", {"csrf_token": csrf, "email": "Vendeur@Optique-Durand.fr",
                                                     "role": "staff", "password": "Vendeur-pass-2026"})
    assert added.status_code == 303 and added.headers["Location"] == "/console/settings?done=settings_member_added"
    assert Browser(client).sign_in("vendeur@optique-durand.fr", "Vendeur-pass-2026").status_code == 303
    again = browser.post("/console/settings/staff", {"csrf_token": csrf, "email": "vendeur@optique-durand.fr",
                                                     "role": "viewer", "password": "Vendeur-pass-2026"})
    assert again.status_code == 400
    assert error_beside(browser, again, "email").startswith("Cette adresse a déjà un compte")
    page = browser.text(browser.get("/console/settings"))
    assert "vendeur@optique-durand.fr" in page and "Retirer vendeur@optique-durand.fr de l’équipe ?" in page

    removed = browser.post("/console/settings/staff/remove", {"csrf_token": csrf, "email": "vendeur@optique-durand.fr"})
    assert removed.status_code == 303 and removed.headers["Location"].endswith("done=settings_member_removed")
    assert {m["email"] for m in shop.get("/merchant/users").json["data"]} == {OWNER[0]}

    alone = browser.post("/console/settings/staff/remove", {"csrf_token": csrf, "email": OWNER[0]})
    assert alone.status_code == 400 and "Le dernier propriétaire ne peut pas être retiré" in browser.text(alone)
    assert browser.post("/console/settings/staff", {"csrf_token": csrf, "email": "associe@optique-durand.fr",
                                                    "role": "owner", "password": "Associe-pass-2026"}).status_code == 303
    leaving = browser.post("/console/settings/staff/remove", {"csrf_token": csrf, "email": OWNER[0]})
    assert leaving.status_code == 303
    assert browser.get("/console/settings").status_code == 303  # signed out with the membership
    assert {m["email"] for m in shop.get("/merchant/users").json["data"]} == {"associe@optique-durand.fr"}


class Address(BaseModel):
    line1: str
    postal_code: str
    city: str
    country: str


class LegalFields(BaseModel):
    legal_name: str | None = None
    address: Address | None = None


class MoreFields(LegalFields):
    accounts: dict[str, str] | None = None
    tags: list[str] | None = None
    tax_rates: dict[str, str] | None = None


def test_a_field_the_merchant_model_gains_is_drawn_from_its_type():
    from chalicelib.web.console_settings import merchant_fields

    assert merchant_fields(MoreFields) == [
        {"name": "accounts", "kind": "map", "parts": (), "group": ""},
        {"name": "tags", "kind": "list", "parts": (), "group": ""},
        {"name": "tax_rates", "kind": "map", "parts": (), "group": ""},
        {"name": "legal_name", "kind": "text", "parts": (), "group": "LegalFields"},
        {"name": "address", "kind": "object", "parts": ("line1", "postal_code", "city", "country"),
         "group": "LegalFields"},
    ]


def test_the_legal_identity_is_set_checked_and_cleared(browser, shop):
    page = browser.get("/console/settings")
    assert "Identité légale (mentions des factures)" in browser.text(page)
    legal = {"legal_name": "Optique Durand SARL", "siren": "732 829 320", "address.line1": "3 rue de la Paix",
             "address.postal_code": "750", "address.city": "Paris", "address.country": "FR"}
    refused = browser.post("/console/settings", settings_fields(browser, page, **legal))
    assert refused.status_code == 400
    assert error_beside(browser, refused, "address.postal_code").startswith("Vérifiez l’adresse")
    assert 'value="Optique Durand SARL"' in browser.text(refused)
    saved = browser.post("/console/settings", settings_fields(browser, refused, **{**legal, "address.postal_code": "75002"}))
    assert saved.status_code == 303, browser.text(saved)
    merchant = shop.get("/merchant").json
    assert (merchant["legal_name"], merchant["siren"]) == ("Optique Durand SARL", "732829320")
    assert merchant["address"] == {"line1": "3 rue de la Paix", "postal_code": "75002", "city": "Paris",
                                   "country": "FR"}
    # A legal field emptied is cleared (the API's null); the others stay.
    page = browser.get("/console/settings")
    assert 'name="address.city" type="text" value="Paris"' in browser.text(page)
    cleared = browser.post("/console/settings", settings_fields(
        browser, page, **{**legal, "address.postal_code": "75002", "legal_name": ""}))
    assert cleared.status_code == 303
    merchant = shop.get("/merchant").json
    assert merchant["legal_name"] is None and merchant["siren"] == "732829320"
