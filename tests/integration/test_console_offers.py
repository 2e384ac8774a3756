"""The console's catalog (moto, chalice's test client): the list, a new
offer from the form (a field error beside its input, then fixed; a ladder
violation beside the rank), a new version of the prices (tiers the form
does not draw kept), archiving, roles and tenancy."""
from __future__ import annotations

import re

import pytest

from tests.integration.console_client import error_beside, member

OFFER = {"code": "neksia", "name": "Clic&O Neksia", "currency": "EUR", "billing_interval": "month",
         "components": [{"code": "base", "type": "flat", "amount": "49.00"},
                        {"code": "calls", "type": "metered", "meter": "calls", "tier_mode": "graduated",
                         "tiers": [{"up_to": "1000", "unit_amount": "0.50"},
                                   {"up_to": None, "unit_amount": "0.40"}]}],
         "options": [{"code": "express", "name": "4h on-site", "amount": "30.00"}]}


pytestmark = pytest.mark.usefixtures("console_clock")


def new_offer_fields(browser, form, **changes) -> dict:
    fields = {
        "csrf_token": browser.hidden(form, "csrf_token"), "form_token": browser.hidden(form, "form_token"),
        "code": "neksia", "name": "Clic&O Neksia", "currency": "EUR", "billing_interval": "month",
        "interval_count": "1", "trial_days": "0", "commitment_months": "48", "ladder": "", "tier_rank": "",
        "entitlements": "",
        "components[0].code": "base", "components[0].type": "flat", "components[0].amount": "49,00",
        "components[0].unit_amount": "", "components[0].meter": "", "components[0].included_units": "",
        "components[1].code": "montage", "components[1].type": "metered", "components[1].amount": "",
        "components[1].unit_amount": "1,20", "components[1].meter": "montages",
        "components[1].included_units": "10",
        # A row left empty (its type alone) is no component.
        "components[2].code": "", "components[2].type": "flat", "components[2].amount": "",
        "options[0].code": "express", "options[0].name": "4h on-site", "options[0].amount": "30",
        "options[0].entitlements": "4h_response",
        "options[1].code": "", "options[1].name": "", "options[1].amount": "",
    }
    fields.update(changes)
    return fields


def test_an_offer_is_created_from_the_form_after_a_field_error(browser, shop):
    form = browser.get("/console/offers/new")
    assert form.status_code == 200
    text = browser.text(form)
    assert 'name="components[1].unit_amount"' in text and 'value="EUR"' in text
    assert "data-add-row" in text and '<label for="f-components[0].code">' in text

    refused = browser.post("/console/offers/new", new_offer_fields(
        browser, form, **{"components[1].unit_amount": "un euro", "components[0].amount": "49,00"}))
    assert refused.status_code == 400
    message = error_beside(browser, refused, "components[1].unit_amount")
    assert message and message.startswith("Saisissez un prix par unité"), browser.text(refused)
    assert 'aria-describedby="e-components[1].unit_amount"' in browser.text(refused)
    # What was typed is still there; the other fields carry no error.
    assert 'value="montage"' in browser.text(refused) and 'value="un euro"' in browser.text(refused)
    assert error_beside(browser, refused, "components[0].amount") is None
    assert shop.get("/offers").json["data"] == []

    created = browser.post("/console/offers/new", new_offer_fields(browser, refused))
    assert created.status_code == 303, browser.text(created)
    offer_id = re.match(r"/console/offers/(off_[0-9a-z]+)\?done=offers_created$", created.headers["Location"]).group(1)
    offer = shop.get(f"/offers/{offer_id}").json
    assert offer["components"] == [
        {"code": "base", "type": "flat", "amount": "49.00"},
        {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20", "included_units": "10"},
    ]
    assert offer["options"] == [{"code": "express", "name": "4h on-site", "amount": "30",
                                 "entitlements": ["4h_response"]}]
    assert (offer["commitment_months"], offer["ladder"], offer["tier_rank"]) == (48, None, None)
    page = browser.get(created.headers["Location"])
    assert "L’offre est créée." in browser.text(page)

    listing = browser.text(browser.get("/console/offers"))
    assert f'<a href="/console/offers/{offer_id}">Clic&amp;O Neksia</a>' in listing
    assert "49,00 €" in listing and '<span class="badge active">Active</span>' in listing and "par mois" in listing


def test_every_field_error_shows_beside_its_input_and_an_empty_form_says_what_is_missing(browser):
    form = browser.get("/console/offers/new")
    fields = new_offer_fields(browser, form, code="a b", currency="EURO", **{"components[0].amount": "-3"})
    refused = browser.post("/console/offers/new", fields)
    assert refused.status_code == 400
    assert error_beside(browser, refused, "code").startswith("Code : lettres")
    assert error_beside(browser, refused, "currency").startswith("Saisissez un code de devise")
    assert error_beside(browser, refused, "components[0].amount").startswith("Saisissez un montant")
    # A code already taken (the service's check) is shown beside the code.
    taken = browser.post("/console/offers/new", new_offer_fields(browser, refused))
    assert taken.status_code == 303
    again = browser.get("/console/offers/new")
    duplicate = browser.post("/console/offers/new", new_offer_fields(browser, again))
    assert duplicate.status_code == 400
    assert error_beside(browser, duplicate, "code").startswith("Ce code est déjà celui d’une autre offre")


def test_a_ladder_violation_is_shown_beside_the_rank(browser, shop):
    basic = {"code": "basic", "name": "Basic", "currency": "EUR", "billing_interval": "month",
             "ladder": "sav", "tier_rank": 1, "entitlements": ["parts"],
             "components": [{"code": "base", "type": "flat", "amount": "30.00"}],
             "options": [{"code": "labour", "name": "Labour", "amount": "5.00", "entitlements": ["labour"]}]}
    assert shop.post("/offers", basic).status == 201
    form = browser.get("/console/offers/new")
    fields = new_offer_fields(browser, form, code="premium", name="Premium", ladder="sav", tier_rank="2",
                              entitlements="parts, labour")
    refused = browser.post("/console/offers/new", fields)
    assert refused.status_code == 400
    message = error_beside(browser, refused, "tier_rank")
    assert message.startswith("Cette offre ne respecte pas la gamme") and "'basic'" in message and "'labour'" in message
    assert 'value="parts, labour"' in browser.text(refused)
    # Priced above what basic with labour costs, it keeps the ladder.
    fixed = browser.post("/console/offers/new", new_offer_fields(
        browser, refused, code="premium", name="Premium", ladder="sav", tier_rank="2", entitlements="parts, labour",
        **{"components[0].amount": "30"}))
    assert fixed.status_code == 303, browser.text(fixed)


def test_a_row_added_without_a_script_keeps_what_was_typed(browser):
    form = browser.get("/console/offers/new")
    grown = browser.post("/console/offers/new", {**new_offer_fields(browser, form), "add_row": "components"})
    assert grown.status_code == 200
    text = browser.text(grown)
    # The empty row was dropped; the two typed rows stay and one empty row follows.
    assert 'name="components[2].code"' in text and 'name="components[3].code"' not in text
    assert 'value="montages"' in text


def test_a_new_version_keeps_the_tiers_the_form_does_not_draw_and_then_the_offer_is_archived(browser, shop):
    offer_id = shop.post("/offers", OFFER).json["id"]
    page = browser.get(f"/console/offers/{offer_id}")
    assert page.status_code == 200
    text = browser.text(page)
    assert 'name="components[0].amount" type="text" value="49.00"' in text
    assert 'name="effective_from" type="date" value="2026-12-01"' in text
    assert "2 paliers" in text and "tier_mode" in text  # the tiers shown, their mode editable
    fields = {"csrf_token": browser.hidden(page, "csrf_token"), "form_token": browser.hidden(page, "form_token"),
              "effective_from": "2026-10-01",
              "components[0].code": "base", "components[0].type": "flat", "components[0].amount": "55,00",
              "components[1].code": "calls", "components[1].type": "metered", "components[1].meter": "calls",
              "components[1].tier_mode": "graduated",
              "options[0].code": "express", "options[0].name": "4h on-site", "options[0].amount": "35.00"}
    past = browser.post(f"/console/offers/{offer_id}/versions", fields)
    assert past.status_code == 400
    assert error_beside(browser, past, "effective_from").startswith("Choisissez un jour à venir")
    assert 'value="55,00"' in browser.text(past)
    without_option = {k: v for k, v in fields.items() if not k.startswith("options")}
    missing = browser.post(f"/console/offers/{offer_id}/versions", {
        **without_option, "effective_from": "2026-12-01", "form_token": browser.hidden(past, "form_token")})
    assert missing.status_code == 400
    assert "option 'express' is missing" in error_beside(browser, missing, "options")

    added = browser.post(f"/console/offers/{offer_id}/versions", {
        **fields, "effective_from": "2026-12-01", "form_token": browser.hidden(missing, "form_token")})
    assert added.status_code == 303, browser.text(added)
    assert added.headers["Location"] == f"/console/offers/{offer_id}?done=offers_version_added"
    offer = shop.get(f"/offers/{offer_id}").json
    assert offer["version"] == 2
    assert offer["versions"][1]["effective_from"] == "2026-11-30T23:00:00Z"  # midnight in Paris
    assert offer["components"][0] == {"code": "base", "type": "flat", "amount": "55.00"}
    assert offer["components"][1]["tiers"] == OFFER["components"][1]["tiers"]
    assert offer["options"][0]["amount"] == "35.00"
    text = browser.text(browser.get(added.headers["Location"]))
    assert "La nouvelle version des prix est enregistrée." in text and "Programmée" in text and "En vigueur" in text

    assert 'data-confirm="Archiver « Clic&amp;O Neksia » ?' in text
    archived = browser.post(f"/console/offers/{offer_id}/archive", {"csrf_token": browser.csrf()})
    assert archived.status_code == 303 and archived.headers["Location"].endswith("?done=offers_archived")
    assert shop.get(f"/offers/{offer_id}").json["status"] == "archived"
    assert "Archivée" in browser.text(browser.get(f"/console/offers/{offer_id}"))


def test_a_viewer_reads_the_catalog_and_gets_403_on_every_post(client, shop):
    offer_id = shop.post("/offers", OFFER).json["id"]
    viewer = member(client, shop, "viewer")
    listing = viewer.get("/console/offers")
    assert listing.status_code == 200 and "/console/offers/new" not in viewer.text(listing)
    page = viewer.get(f"/console/offers/{offer_id}")
    assert page.status_code == 200 and "/archive" not in viewer.text(page)
    assert viewer.get("/console/offers/new").status_code == 403
    csrf = viewer.csrf()
    for path in ("/console/offers/new", f"/console/offers/{offer_id}/archive", f"/console/offers/{offer_id}/versions"):
        answer = viewer.post(path, {"csrf_token": csrf, "form_token": "x" * 24, "code": "x"})
        assert answer.status_code == 403, path
        assert "Votre rôle ne permet pas cette action" in viewer.text(answer)
    assert shop.get(f"/offers/{offer_id}").json["status"] == "active"
    # Staff serve customers: they may create offers.
    staff = member(client, shop, "staff")
    form = staff.get("/console/offers/new")
    assert staff.post("/console/offers/new", new_offer_fields(staff, form, code="by-staff")).status_code == 303


def test_another_merchants_offer_is_404(browser, new_merchant):
    other = new_merchant(name="Autre Optique")
    foreign = other.post("/offers", OFFER).json["id"]
    assert browser.get(f"/console/offers/{foreign}").status_code == 404
    assert browser.get("/console/offers/off_unknown").status_code == 404
    csrf = browser.csrf()
    assert browser.post(f"/console/offers/{foreign}/archive", {"csrf_token": csrf}).status_code == 404
    assert browser.post(f"/console/offers/{foreign}/versions", {"csrf_token": csrf, "form_token": "y" * 24,
                                                               "effective_from": "2026-12-01"}).status_code == 404
    assert other.get(f"/offers/{foreign}").json["status"] == "active"
