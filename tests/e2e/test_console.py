"""The merchant's back office in a real browser on the local stage: the
journeys of a shop's staff serving customers who are not online."""
from __future__ import annotations

import time
import uuid

import pytest

from tests.e2e.console_browser import Staff

PASSWORD = "Gerant-pass-2026"


@pytest.fixture
def shop(new_merchant):
    """A shop and its owner (an e-mail of its own: accounts are unique in the stage's pool)."""
    email = f"gerant-{uuid.uuid4().hex[:8]}@optique-durand.fr"
    merchant = new_merchant(name="Optique Durand", owner_email=email, owner_password=PASSWORD)
    merchant.owner = (email, PASSWORD)
    return merchant


@pytest.fixture
def owner(chromium, stage, shop):
    staff = Staff(chromium, stage.url)
    staff.sign_in(*shop.owner)
    yield staff
    assert staff.errors == []
    staff.close()


def test_the_owner_signs_in_to_the_dashboard_and_out_again(chromium, stage, shop):
    staff = Staff(chromium, stage.url)
    staff.goto("/console/customers")
    assert staff.path.startswith("/console/login?next=")
    staff.shot("sign-in")
    staff.page.fill('input[name="email"]', shop.owner[0])
    staff.page.fill('input[name="password"]', "Not-the-password-1")
    with staff.page.expect_navigation():
        staff.page.keyboard.press("Enter")
    assert "L’adresse e-mail ou le mot de passe n’est pas correct." in staff.page.inner_text("main")
    staff.shot("sign-in-refused")
    staff.sign_in(*shop.owner)
    assert staff.path == "/console"
    assert staff.page.locator("h1").inner_text() == "Tableau de bord · Optique Durand"
    assert staff.page.locator("figure.chart > svg").count() == 3
    staff.shot("dashboard-fr")
    cookie = next(c for c in staff.context.cookies() if c["name"] == "console_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    staff.page.get_by_role("button", name="English").click()
    assert staff.page.locator("h1").inner_text() == "Dashboard · Optique Durand"
    staff.shot("dashboard-en")
    staff.page.get_by_role("button", name="Sign out").click()
    assert staff.path == "/console/login?done=signed_out"
    staff.goto("/console")
    assert staff.path.startswith("/console/login")
    assert staff.errors == []
    staff.close()


def test_a_viewer_sees_but_changes_nothing(chromium, stage, shop):
    viewer_email = f"stagiaire-{uuid.uuid4().hex[:8]}@optique-durand.fr"
    added = shop.post("/merchant/users", json={"email": viewer_email, "role": "viewer",
                                               "password": "Viewer-pass-2026"})
    assert added.status_code == 201, added.text
    viewer = Staff(chromium, stage.url)
    viewer.sign_in(viewer_email, "Viewer-pass-2026")
    assert viewer.path == "/console"
    assert "lecture seule" in viewer.page.inner_text("header")
    # A write posted by a viewer (here the language form's neighbour: any
    # console POST) is refused with the 403 page, whatever the page shows.
    csrf = viewer.page.locator('input[name="csrf_token"]').first.get_attribute("value")
    answer = viewer.page.request.post(stage.url + "/console/customers/new",
                                      form={"csrf_token": csrf, "name": "X", "email": "x@example.fr", "country": "FR"})
    assert answer.status == 403
    assert "Votre rôle ne permet pas cette action" in answer.text()
    viewer.page.set_content(answer.text())
    viewer.shot("viewer-refused")
    viewer.close()


def test_another_merchants_customer_is_a_404_page(owner, new_merchant):
    other = new_merchant(name="Autre Opticien")
    customer = other.post("/customers", json={"name": "Client d'ailleurs", "email": "ailleurs@example.fr",
                                              "country": "FR"})
    assert customer.status_code == 201, customer.text
    answer = owner.goto(f"/console/customers/{customer.json()['id']}")
    assert answer.status == 404
    assert owner.page.locator("h1").inner_text() == "Page introuvable"
    assert "Client d'ailleurs" not in owner.page.content()
    owner.shot("other-merchant-404")


OFFER = {"code": "entretien", "name": "Contrat d'entretien", "currency": "EUR", "billing_interval": "month",
         "components": [{"code": "base", "type": "flat", "amount": "29.00"}],
         "options": [{"code": "express", "name": "Intervention 4 h", "amount": "10.00"},
                     {"code": "pret", "name": "Appareil de prêt", "amount": "5.00"}]}


def an_offer(shop) -> dict:
    offer = shop.post("/offers", json=OFFER)
    assert offer.status_code == 201, offer.text
    return offer.json()


def subscribe_walk_in(owner: Staff, name: str = "Jeanne Martin") -> str:
    """At the counter: a customer and a subscription in one form, a field
    error on the way; the customer page's id."""
    owner.goto("/console/customers")
    owner.page.get_by_role("link", name="Nouveau client").first.click()
    owner.page.fill('input[name="name"]', name)
    owner.page.fill('input[name="email"]', "jeanne.martin@example.fr")
    owner.page.fill('input[name="country"]', "XF")  # no such country
    owner.page.select_option('select[name="offer_id"]', label=f"{OFFER['name']} ({OFFER['code']})")
    owner.page.get_by_role("checkbox", name="Intervention 4 h").check()
    with owner.page.expect_navigation():
        owner.page.locator('main form button[type="submit"]').first.click()
    error = owner.page.locator("#e-country")
    assert error.is_visible(), owner.page.inner_text("main")
    assert owner.page.input_value('input[name="name"]') == name  # what was typed is kept
    owner.shot("walk-in-field-error")
    owner.page.fill('input[name="country"]', "FR")
    with owner.page.expect_navigation():
        owner.page.locator('main form button[type="submit"]').first.click()
    assert owner.path.startswith("/console/customers/cus_"), owner.path
    return owner.path.split("/")[3].split("?")[0]


def test_a_walk_in_customer_subscribes_at_the_counter(owner, shop):
    an_offer(shop)
    customer_id = subscribe_walk_in(owner)
    main = owner.page.inner_text("main")
    assert "Jeanne Martin" in main and "Contrat d'entretien" in main and "Intervention 4 h" in main
    owner.shot("customer-page")
    shown = shop.get(f"/customers/{customer_id}").json()
    (subscription,) = shown["subscriptions"]
    assert subscription["options"] == ["express"]
    owner.goto("/console/customers?q=mart")
    assert "Jeanne Martin" in owner.page.inner_text("main")
    owner.shot("customers-search")


def test_a_known_customer_takes_a_second_subscription(owner, shop, chromium, stage):
    an_offer(shop)
    customer_id = subscribe_walk_in(owner)
    owner.page.get_by_role("link", name="Nouvel abonnement").click()
    owner.page.wait_for_url(f"**/console/customers/{customer_id}/subscriptions/new")
    owner.page.select_option('select[name="offer_id"]', label=f"{OFFER['name']} ({OFFER['code']})")
    owner.shot("second-subscription")
    with owner.page.expect_navigation():
        owner.page.get_by_role("button", name="Abonner le client").click()
    assert owner.path == f"/console/customers/{customer_id}?done=customers_subscribed", owner.path
    assert "L’abonnement est créé." in owner.page.inner_text("main")
    rows = owner.page.locator("section[aria-labelledby=h-subscriptions] tbody tr")
    assert rows.count() == 2
    owner.shot("customer-two-subscriptions")
    options = sorted(tuple(s["options"]) for s in shop.get(f"/customers/{customer_id}").json()["subscriptions"])
    assert options == [(), ("express",)]
    # The same form in English, as an English-speaking assistant reads it.
    english = Staff(chromium, stage.url, lang="en")
    english.sign_in(*shop.owner)
    english.goto(f"/console/customers/{customer_id}")
    english.page.get_by_role("link", name="New subscription").click()
    assert "Subscribe Jeanne Martin" in english.page.inner_text("main")
    english.shot("second-subscription-en")
    assert english.errors == []
    english.close()


def test_an_offer_is_created_after_a_field_error_is_fixed(owner, shop):
    page = owner.page
    owner.goto("/console/offers/new")
    page.fill('input[name="code"]', "clico-neksia")
    page.fill('input[name="name"]', "Clic&O Neksia")
    page.fill('input[name="currency"]', "EUR")
    page.fill('input[name="components[0].code"]', "base")
    page.fill('input[name="components[0].amount"]', "49,00")
    page.get_by_role("button", name="Ajouter un composant").click()  # the script adds row 2, no reload
    page.fill('input[name="components[1].code"]', "montage")
    page.select_option('select[name="components[1].type"]', "metered")
    page.fill('input[name="components[1].meter"]', "montages")
    page.fill('input[name="components[1].unit_amount"]', "un euro vingt")
    with page.expect_navigation():
        page.get_by_role("button", name="Créer l’offre").click()
    error = page.locator('[id="e-components[1].unit_amount"]')
    assert error.is_visible(), page.inner_text("main")
    assert page.input_value('input[name="components[0].amount"]') == "49,00"
    owner.shot("offer-field-error")
    page.fill('input[name="components[1].unit_amount"]', "1,20")
    with page.expect_navigation():
        page.get_by_role("button", name="Créer l’offre").click()
    assert owner.path.startswith("/console/offers/off_"), owner.path
    owner.shot("offer-created")
    (offer,) = [o for o in shop.get("/offers").json()["data"] if o["code"] == "clico-neksia"]
    assert [(c["code"], c.get("amount"), c.get("unit_amount")) for c in offer["components"]] == [
        ("base", "49.00", None), ("montage", None, "1.20")]


BIGGER = {**OFFER, "code": "entretien-plus", "name": "Contrat d'entretien Plus",
          "components": [{"code": "base", "type": "flat", "amount": "39.00"}]}


def subscribed_without_card(shop, offer_id: str, name: str) -> tuple[str, str]:
    customer = shop.post("/customers", json={"name": name, "email": "client@example.fr", "country": "FR"})
    assert customer.status_code == 201, customer.text
    subscription = shop.post("/subscriptions", json={"customer_id": customer.json()["id"], "offer_id": offer_id})
    assert subscription.status_code == 201, subscription.text
    return customer.json()["id"], subscription.json()["id"]


def submit(owner: Staff, button: str) -> None:
    """Click a form's button as a person does, accepting its confirmation."""
    owner.page.once("dialog", lambda dialog: dialog.accept())
    with owner.page.expect_navigation():
        owner.page.get_by_role("button", name=button).click()


def test_the_shop_serves_a_subscription_change_compensation_and_cancellation(owner, shop, chromium):
    from tests.e2e.test_payment_page import save_card

    offer = an_offer(shop)
    shop.post("/offers", json=BIGGER)
    customer_id, subscription_id = subscribed_without_card(shop, offer["id"], "Paul Lefèvre")
    save_card(chromium, shop.post(f"/customers/{customer_id}/payment-link").json()["url"], offer_name=OFFER["name"])
    deadline = time.monotonic() + 30
    while shop.get(f"/subscriptions/{subscription_id}").json()["status"] != "active":
        assert time.monotonic() < deadline, "the first invoice was not paid with the saved card"
        time.sleep(0.5)
    owner.goto(f"/console/subscriptions/{subscription_id}")
    page = owner.page
    owner.shot("subscription-fr")

    page.select_option('select[name="offer_id"]', label=f"{BIGGER['name']} ({BIGGER['code']})")
    page.select_option('select[name="effective"]', "period_end")
    submit(owner, "Enregistrer le changement")
    assert "Le changement est programmé pour la fin de la période." in page.inner_text("main")
    assert shop.get(f"/subscriptions/{subscription_id}").json()["offer_id"] == offer["id"]  # not yet

    page.select_option('select[name="free_option"]', index=1)
    page.select_option('select[name="free_effective"]', "period_end")
    page.fill('textarea[name="free_reason"]', "Intervention en retard de deux jours")
    submit(owner, "Offrir l’option")
    assert "L’option sera offerte à partir de la prochaine période." in page.inner_text("main")

    page.select_option('select[name="cancel_when"]', "period_end")
    page.select_option('select[name="cancel_reason"]', "moved_away")
    page.fill('textarea[name="cancel_comment"]', "Part à Lyon")
    submit(owner, "Résilier l’abonnement")
    assert "La résiliation est programmée pour la fin de la période." in page.inner_text("main")
    owner.shot("subscription-after-actions-fr")
    shown = shop.get(f"/subscriptions/{subscription_id}").json()
    assert shown["cancel_at_period_end"] is True and shown["status"] != "canceled"
    history = shop.get(f"/subscriptions/{subscription_id}/history").json()["data"]
    ours = [entry for entry in history if entry["actor"] == f"user:{shop.owner[0]}"]
    assert [entry["type"] for entry in ours] == ["change_scheduled", "change_scheduled", "cancellation_scheduled"], history
    page.get_by_role("button", name="English").click()
    page.wait_for_load_state()
    assert "Cancel the subscription" in page.inner_text("main")
    owner.shot("subscription-en")


def test_the_shop_credits_voids_and_takes_cash(owner, shop):
    offer = an_offer(shop)
    customer_id, first = subscribed_without_card(shop, offer["id"], "Anne Moreau")
    _, second = subscribed_without_card(shop, offer["id"], "Anne Moreau (atelier)")
    invoice, = shop.get("/invoices", params={"subscription_id": first}).json()["data"]
    other, = shop.get("/invoices", params={"subscription_id": second}).json()["data"]
    assert invoice["amount_due"] == "34.80"  # 29.00 + 20 % VAT, no card yet
    page = owner.page

    owner.goto(f"/console/invoices/{invoice['id']}")
    owner.shot("invoice-open-fr")
    page.fill('input[name="cn_amount"]', "4,80")
    page.select_option('select[name="cn_reason"]', "goodwill")
    submit(owner, "Émettre l’avoir")
    assert "L’avoir est émis." in page.inner_text("main")
    page.select_option('select[name="pay_method"]', "cash")
    page.fill('input[name="pay_amount"]', "30,00")
    submit(owner, "Enregistrer le paiement")
    assert "Le paiement est enregistré." in page.inner_text("main")
    owner.shot("invoice-paid-fr")
    paid = shop.get(f"/invoices/{invoice['id']}").json()
    assert (paid["status"], paid["amount_credited"], paid["amount_paid"], paid["amount_due"]) == (
        "paid", "4.80", "30.00", "0.00")

    owner.goto(f"/console/invoices/{other['id']}")
    submit(owner, "Annuler la facture")
    assert "La facture est annulée." in page.inner_text("main")
    assert shop.get(f"/invoices/{other['id']}").json()["status"] == "void"
    page.get_by_role("button", name="English").click()
    page.wait_for_load_state()
    owner.shot("invoice-void-en")
    owner.goto(f"/console/customers/{customer_id}")
    owner.shot("customer-after-cash-en")
