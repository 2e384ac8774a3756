"""The console shows the merchant its resellers and licensors, a reseller's
book of customers and a payee's statement of the month; another merchant's
payee is a 404 page."""
from __future__ import annotations

import pytest

from tests.integration.console_client import Browser

pytestmark = pytest.mark.usefixtures("console_clock")
RESELLER = {"kind": "reseller", "name": "Réseau Vision", "email": "compta@reseau-vision.fr",
            "rules": [{"percent": "20", "first_months": 3, "then_percent": "10"}]}


def test_a_resellers_book_and_statement(shop, browser, new_merchant):
    reseller = shop.post("/payees", RESELLER).json
    licensor = shop.post("/payees", {**RESELLER, "kind": "licensor", "name": "Neksia Labs",
                                     "rules": [{"per_unit": "0.05"}]}).json
    customer = shop.post("/customers", {"name": "Labo Ouest", "email": "ouest@labo.fr", "country": "FR",
                                        "reseller_id": reseller["id"]}).json
    shop.post("/customers", {"name": "Labo Direct", "email": "direct@labo.fr", "country": "FR"})
    listing = Browser.text(browser.get("/console/payees"))
    assert "Réseau Vision" in listing and "Neksia Labs" in listing and "Revendeur" in listing
    page = browser.get(f"/console/payees/{reseller['id']}")
    assert page.status_code == 200
    shown = Browser.text(page)
    assert "Labo Ouest" in shown and "Labo Direct" not in shown and f"/console/customers/{customer['id']}" in shown
    assert "brouillon" in shown
    assert "Labo Ouest" not in Browser.text(browser.get(f"/console/payees/{licensor['id']}"))
    other = new_merchant(name="Autre").post("/payees", RESELLER).json
    assert browser.get(f"/console/payees/{other['id']}").status_code == 404
    assert browser.get("/console/payees/pye_nope").status_code == 404
