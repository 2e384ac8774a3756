"""The console's customers (moto, chalice's test client): the list and its
pages, the search by name prefix (accents and case aside), e-mail and
external id, the subscription status filter, a walk-in customer with its
subscription (a field error, then fixed; a double post makes one), a
second subscription for a customer who exists, the
customer's page with everything it has and its bounded DynamoDB requests,
tenancy and roles."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest

from tests.integration.console_client import NOW, Browser
from tests.integration.table_stream import billing_table_stream

OFFER = {"code": "neksia", "name": "Clic&O Neksia", "currency": "EUR", "billing_interval": "month",
         "components": [{"code": "base", "type": "flat", "amount": "49.00"},
                        {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"}],
         "options": [{"code": "express", "name": "4h on-site", "amount": "30.00"}]}
FREE = {"code": "free", "name": "Free", "currency": "EUR", "billing_interval": "month",
        "components": [{"code": "base", "type": "flat", "amount": "0.00"}]}


pytestmark = pytest.mark.usefixtures("console_clock")


def customer(api, name, email=None, **fields) -> str:
    body = {"name": name, "email": email or f"{re.sub(r'[^a-z]', '', name.lower())}@example.fr", "country": "FR",
            **fields}
    response = api.post("/customers", body)
    assert response.status == 201, response
    return response.json["id"]


def offer(api, body=OFFER) -> str:
    response = api.post("/offers", body)
    assert response.status == 201, response
    return response.json["id"]


def subscribe(api, customer_id, offer_id, **fields) -> dict:
    response = api.post("/subscriptions", {"customer_id": customer_id, "offer_id": offer_id, **fields})
    assert response.status == 201, response
    return response.json


def names_in(browser, page) -> list[str]:
    return re.findall(r'<td><a href="/console/customers/cus_[0-9a-z]+">([^<]+)</a></td>', browser.text(page))


def search(browser, query: str) -> list[str]:
    from urllib.parse import quote

    page = browser.get(f"/console/customers?q={quote(query)}")
    assert page.status_code == 200, browser.text(page)
    return sorted(names_in(browser, page))


def invalid_inputs(browser, page) -> set[str]:
    return set(re.findall(r'name="([^"]+)" [^>]*aria-invalid="true"', browser.text(page))) | set(
        re.findall(r'<select id="f-[^"]+" name="([^"]+)" aria-invalid="true"', browser.text(page)))


def deliver_audit() -> None:
    from app import change_feed

    stream = billing_table_stream()
    stream.deliver(change_feed)
    assert not stream.pending


# ---------------------------------------------------------------------------
# The list


def test_the_list_pages_by_cursor_newest_first(browser, shop):
    made = [customer(shop, f"Client {n:02d}") for n in range(30)]
    first = browser.get("/console/customers")
    assert first.status_code == 200
    names = names_in(browser, first)
    assert names == [f"Client {n:02d}" for n in range(29, 4, -1)]
    following = re.search(r'href="(/console/customers\?cursor=[^"]+)" rel="next"', browser.text(first))
    assert following, "a next page link"
    second = browser.get(following.group(1).replace("&amp;", "&"))
    assert names_in(browser, second) == [f"Client {n:02d}" for n in range(4, -1, -1)]
    assert 'rel="next"' not in browser.text(second) and "Première page" in browser.text(second)
    assert len(made) == 30
    forged = browser.get("/console/customers?cursor=bm90LWEtY3Vyc29y")
    assert forged.status_code == 400 and "cursor" in browser.text(forged)
    browser.post("/console/language", {"lang": "en", "next": "/console/customers"})
    english = browser.text(browser.get("/console/customers"))
    assert "New customer" in english and "Next page" in english and "No subscription" in english
    english_page = browser.text(browser.get(f"/console/customers/{made[0]}"))
    assert "History of changes" in english_page and "No card on file" in english_page


def test_search_by_name_prefix_ignores_accents_and_case(browser, shop):
    for name in ("Jean Dupont", "Dupont SARL", "Hélène Durand", "Marc Martin", "L'Atelier Dupuis-Éluard"):
        customer(shop, name)
    assert search(browser, "dup") == ["Dupont SARL", "Jean Dupont", "L&#39;Atelier Dupuis-Éluard"]
    assert search(browser, "DUPONT") == ["Dupont SARL", "Jean Dupont"]
    assert search(browser, "helene") == search(browser, "HÉL") == ["Hélène Durand"]
    assert search(browser, "jean dup") == ["Jean Dupont"]
    assert search(browser, "eluard") == ["L&#39;Atelier Dupuis-Éluard"]
    assert search(browser, "zzz") == []
    assert "Aucun client ne correspond" in browser.text(browser.get("/console/customers?q=zzz"))


def test_a_name_search_follows_renames_and_pages(browser, shop):
    renamed = customer(shop, "Optique Bernard")
    assert shop.patch(f"/customers/{renamed}", {"name": "Lunettes Moreau"}).status == 200
    assert search(browser, "bern") == [] and search(browser, "moreau") == ["Lunettes Moreau"]
    for n in range(27):
        customer(shop, f"Garage Dupré {n:02d}")
    first = browser.get("/console/customers?q=dupre")
    assert len(names_in(browser, first)) == 25
    following = re.search(r'href="(/console/customers\?[^"]*cursor=[^"]+)" rel="next"', browser.text(first))
    second = browser.get(following.group(1).replace("&amp;", "&"))
    assert len(names_in(browser, second)) == 2
    assert set(names_in(browser, first)).isdisjoint(names_in(browser, second))


def test_the_words_of_a_name():
    from chalicelib.store.customers import name_tokens

    assert name_tokens("Jean-Loïc  DUPONT & Fils") == ["jean", "loic", "dupont", "fils"]
    assert name_tokens("Ærø Straße Øster") == ["ærø", "strasse", "øster"]
    assert name_tokens("a a a b") == ["a", "b"] and name_tokens("--") == []
    assert len(name_tokens(" ".join(f"w{n}" for n in range(20)))) == 8


def test_a_customer_without_name_records_gets_them_at_its_next_edit(browser, shop):
    """Customers created before the name records existed: found by name
    once edited (any field)."""
    from chalicelib.store.customers import NameTokenRecord, name_tokens

    merchant_id = shop.merchant["id"]
    customer_id = customer(shop, "Ancienne Maison Roux")
    for token in name_tokens("Ancienne Maison Roux"):
        NameTokenRecord(*NameTokenRecord.key(merchant_id, token, customer_id)).delete()
    assert search(browser, "roux") == []
    assert shop.patch(f"/customers/{customer_id}", {"email": "contact@roux.fr"}).status == 200
    assert search(browser, "roux") == ["Ancienne Maison Roux"]


def test_search_by_email_and_external_id(browser, shop):
    customer(shop, "Labo Martin", email="Compta@Labo-Martin.fr", external_id="ERP-0042")
    customer(shop, "Labo Martin bis", email="compta@labo-martin.fr")
    customer(shop, "Autre", email="autre@example.fr")
    assert search(browser, "COMPTA@labo-martin.fr") == ["Labo Martin", "Labo Martin bis"]
    assert search(browser, "ERP-0042") == ["Labo Martin"]
    assert search(browser, "ERP-004") == []


def test_the_status_filter_lists_the_customers_of_those_subscriptions(browser, shop):
    paying, free, none = customer(shop, "Sans Carte"), customer(shop, "Gratuit"), customer(shop, "Prospect")
    subscribe(shop, paying, offer(shop))
    subscribe(shop, free, offer(shop, FREE))
    subscribe(shop, free, offer(shop, {**FREE, "code": "free2"}))
    page = browser.get("/console/customers?status=active")
    assert names_in(browser, page) == ["Gratuit"]
    assert '<span class="badge active">Actif ×2</span>' in browser.text(page)
    assert names_in(browser, browser.get("/console/customers?status=incomplete")) == ["Sans Carte"]
    assert names_in(browser, browser.get("/console/customers?status=canceled")) == []
    everyone = browser.get("/console/customers")
    assert "En attente de carte" in browser.text(everyone) and "Aucun abonnement" in browser.text(everyone)
    assert none
    bad = browser.get("/console/customers?status=sleeping")
    assert bad.status_code == 400 and invalid_inputs(browser, bad) == {"status"}
    assert "status: one of" in browser.text(bad)


# ---------------------------------------------------------------------------
# A walk-in customer


def walk_in_fields(page_browser, page, **fields) -> dict:
    return {"csrf_token": page_browser.hidden(page, "csrf_token"), "form_token": page_browser.hidden(page, "form_token"),
            "name": "Jean Dupont", "email": "jean@dupont.fr", "country": "fr", **fields}


def test_a_walk_in_customer_with_a_field_error_then_fixed(browser, shop):
    offer_id = offer(shop)
    form = browser.get("/console/customers/new")
    assert form.status_code == 200
    assert f'value="{offer_id}:express"' in browser.text(form)
    wrong = browser.post("/console/customers/new", walk_in_fields(
        browser, form, email="jean-at-dupont", country="XX", offer_id=offer_id, options=[f"{offer_id}:express"]))
    assert wrong.status_code == 400
    assert invalid_inputs(browser, wrong) == {"email", "country"}
    text = browser.text(wrong)
    assert "Vérifiez l’adresse e-mail (email: not an e-mail address)" in text
    assert "country: not an ISO 3166-1 alpha-2 country code" in text
    assert 'value="Jean Dupont"' in text and f'value="{offer_id}:express" checked' in text
    assert browser.hidden(wrong, "form_token") != browser.hidden(form, "form_token")
    assert shop.get("/customers?email=jean@dupont.fr").json["data"] == []

    fixed = browser.post("/console/customers/new", walk_in_fields(
        browser, wrong, offer_id=offer_id, options=[f"{offer_id}:express"], start_at="2026-11-10"))
    assert fixed.status_code == 303, browser.text(fixed)
    location = fixed.headers["Location"]
    customer_id = re.match(r"/console/customers/(cus_[0-9a-z]+)\?done=customers_created_subscribed$", location).group(1)
    page = browser.get(location)
    assert "Le client et son abonnement sont créés." in browser.text(page)
    [subscription] = shop.get(f"/subscriptions?customer_id={customer_id}").json["data"]
    assert subscription["offer_id"] == offer_id and subscription["options"] == ["express"]
    assert subscription["start_at"] == "2026-11-09T23:00:00Z"  # midnight in Paris
    assert shop.get(f"/customers/{customer_id}").json["country"] == "FR"


def test_a_walk_in_subscription_is_checked_before_the_customer_is_made(browser, shop):
    archived = offer(shop)
    assert shop.post(f"/offers/{archived}/archive").status == 200
    form = browser.get("/console/customers/new")
    for extra, param in [({"offer_id": archived}, "offer_id"), ({"offer_id": "off_nope"}, "offer_id"),
                         ({"offer_id": offer(shop, {**OFFER, "code": "other"}), "start_at": "02/11/2026"}, "start_at"),
                         ({"offer_id": offer(shop, {**OFFER, "code": "third"}),
                           "start_at": "2026-11-01"}, "start_at"),
                         ({"external_id": "x" * 201}, "external_id")]:
        answer = browser.post("/console/customers/new", walk_in_fields(browser, form, **extra))
        assert answer.status_code == 400, (extra, browser.text(answer))
        assert param in invalid_inputs(browser, answer) or f'id="e-{param}"' in browser.text(answer), extra
        form = answer  # its new one-time token
    assert shop.get("/customers?email=jean@dupont.fr").json["data"] == []
    # The same form sent again with other values: nothing is made, the values are offered again.
    reused = browser.post("/console/customers/new", walk_in_fields(browser, form, name="Jean Dupond"))
    assert reused.status_code == 303
    again = browser.post("/console/customers/new", walk_in_fields(browser, form, name="Jean Dupont"))
    assert again.status_code == 409 and "Ce formulaire a déjà été envoyé" in browser.text(again)
    assert 'value="Jean Dupont"' in browser.text(again)
    assert [c["name"] for c in shop.get("/customers?email=jean@dupont.fr").json["data"]] == ["Jean Dupond"]


def test_a_double_post_of_the_form_makes_one_customer(browser, shop):
    form = browser.get("/console/customers/new")
    fields = walk_in_fields(browser, form)
    first = browser.post("/console/customers/new", fields)
    again = browser.post("/console/customers/new", fields)
    assert first.status_code == again.status_code == 303
    assert again.headers["Location"] == first.headers["Location"]
    assert len(shop.get("/customers?email=jean@dupont.fr").json["data"]) == 1
    # A new form is a new customer (a namesake), and a forged token is refused.
    second = browser.post("/console/customers/new", walk_in_fields(browser, browser.get("/console/customers/new")))
    assert second.status_code == 303 and second.headers["Location"] != first.headers["Location"]
    assert browser.post("/console/customers/new", {**fields, "form_token": ""}).status_code == 400


def test_two_posts_of_the_form_at_once_make_one_customer(browser, shop):
    import threading

    fields = walk_in_fields(browser, browser.get("/console/customers/new"))
    answers = []
    posts = [threading.Thread(target=lambda: answers.append(browser.post("/console/customers/new", fields)))
             for _ in range(2)]
    for post in posts:
        post.start()
    for post in posts:
        post.join()
    assert [a.status_code for a in answers] == [303, 303]
    assert answers[0].headers["Location"] == answers[1].headers["Location"]
    assert len(shop.get("/customers?email=jean@dupont.fr").json["data"]) == 1


def subscription_fields(page_browser, page, **fields) -> dict:
    return {"csrf_token": page_browser.hidden(page, "csrf_token"), "form_token": page_browser.hidden(page, "form_token"),
            **fields}


def test_a_customer_takes_a_second_subscription_from_their_page(browser, shop):
    offer_id, archived = offer(shop), offer(shop, {**OFFER, "code": "old"})
    assert shop.post(f"/offers/{archived}/archive").status == 200
    customer_id = customer(shop, "Jean Dupont")
    first = subscribe(shop, customer_id, offer_id)
    page = browser.get(f"/console/customers/{customer_id}")
    assert f'href="/console/customers/{customer_id}/subscriptions/new"' in browser.text(page)
    form = browser.get(f"/console/customers/{customer_id}/subscriptions/new")
    assert form.status_code == 200 and "Abonner Jean Dupont" in browser.text(form)
    assert f'value="{offer_id}:express"' in browser.text(form) and archived not in browser.text(form)
    url = f"/console/customers/{customer_id}/subscriptions"
    for extra, param in [({"offer_id": ""}, "offer_id"), ({"offer_id": archived}, "offer_id"),
                         ({"offer_id": offer_id, "start_at": "2026-11-01"}, "start_at"),
                         ({"offer_id": offer_id, "start_at": "02/12/2026"}, "start_at")]:
        wrong = browser.post(url, subscription_fields(browser, form, **extra))
        assert wrong.status_code == 400, (extra, browser.text(wrong))
        assert param in invalid_inputs(browser, wrong), (extra, browser.text(wrong))
        form = wrong  # its new one-time token
    fields = subscription_fields(browser, form, offer_id=offer_id, options=[f"{offer_id}:express"],
                                 start_at="2026-11-10")
    done = browser.post(url, fields)
    assert done.status_code == 303, browser.text(done)
    assert done.headers["Location"] == f"/console/customers/{customer_id}?done=customers_subscribed"
    assert "L’abonnement est créé." in browser.text(browser.get(done.headers["Location"]))
    # The same form again (a double click): the first answer, one subscription.
    again = browser.post(url, fields)
    assert again.status_code == 303 and again.headers["Location"] == done.headers["Location"]
    subscriptions = shop.get(f"/subscriptions?customer_id={customer_id}").json["data"]
    [second] = [s for s in subscriptions if s["id"] != first["id"]]
    assert len(subscriptions) == 2 and second["options"] == ["express"]
    assert second["start_at"] == "2026-11-09T23:00:00Z"  # midnight in Paris
    # The same form with other values: refused, nothing more made.
    other = browser.post(url, {**fields, "options": []})
    assert other.status_code == 409 and "Ce formulaire a déjà été envoyé" in browser.text(other)
    assert len(shop.get(f"/subscriptions?customer_id={customer_id}").json["data"]) == 2


def test_another_merchants_customer_takes_no_subscription_here(browser, shop, new_merchant):
    other = new_merchant(name="Optique Martin", owner_email="owner@martin.fr", owner_password="Martin-pass-2026")
    theirs, offer_id = customer(other, "Client de Martin"), offer(shop)
    assert browser.get(f"/console/customers/{theirs}/subscriptions/new").status_code == 404
    answer = browser.post(f"/console/customers/{theirs}/subscriptions",
                          {"csrf_token": browser.csrf(), "form_token": "x" * 24, "offer_id": offer_id})
    assert answer.status_code == 404 and "Page introuvable" in browser.text(answer)
    assert other.get(f"/subscriptions?customer_id={theirs}").json["data"] == []


def test_a_viewer_cannot_create_or_edit(client, browser, shop):
    customer_id = customer(shop, "Jean Dupont")
    assert shop.post("/merchant/users", {"email": "stagiaire@optique-durand.fr", "role": "viewer",
                                         "password": "Viewer-pass-2026"}).status == 201
    viewer = Browser(client)
    assert viewer.sign_in("stagiaire@optique-durand.fr", "Viewer-pass-2026").status_code == 303
    listing = viewer.get("/console/customers")
    assert listing.status_code == 200 and "/console/customers/new" not in viewer.text(listing)
    assert viewer.get("/console/customers/new").status_code == 403
    answer = viewer.post("/console/customers/new", {"csrf_token": viewer.csrf(), "form_token": "x" * 24,
                                                    "name": "Intrus", "email": "i@x.fr", "country": "FR"})
    assert answer.status_code == 403 and "Votre rôle ne permet pas cette action" in viewer.text(answer)
    assert viewer.get(f"/console/customers/{customer_id}/edit").status_code == 403
    assert viewer.get(f"/console/customers/{customer_id}/subscriptions/new").status_code == 403
    assert viewer.post(f"/console/customers/{customer_id}/subscriptions",
                       {"csrf_token": viewer.csrf(), "form_token": "x" * 24, "offer_id": "off_x"}).status_code == 403
    assert viewer.post(f"/console/customers/{customer_id}/edit",
                       {"csrf_token": viewer.csrf(), "name": "Renamed"}).status_code == 403
    assert shop.get("/customers?email=i@x.fr").json["data"] == []
    page = viewer.get(f"/console/customers/{customer_id}")
    assert page.status_code == 200 and f"/console/customers/{customer_id}/edit" not in viewer.text(page)
    assert "/subscriptions/new" not in viewer.text(page)


def test_editing_a_customer_follows_the_patch_rules(browser, shop):
    customer_id = customer(shop, "Jean Dupont", external_id="ERP-1", locale="fr")
    customer(shop, "Autre", external_id="ERP-2")
    form = browser.get(f"/console/customers/{customer_id}/edit")
    csrf = browser.hidden(form, "csrf_token")
    base = {"csrf_token": csrf, "name": "Jean Dupont", "email": "jean@dupont.fr", "country": "FR",
            "external_id": "ERP-1", "locale": "fr"}
    taken = browser.post(f"/console/customers/{customer_id}/edit", {**base, "external_id": "ERP-2"})
    assert taken.status_code == 400 and invalid_inputs(browser, taken) == {"external_id"}
    emptied = browser.post(f"/console/customers/{customer_id}/edit", {**base, "name": ""})
    assert emptied.status_code == 400 and invalid_inputs(browser, emptied) == {"name"}
    saved = browser.post(f"/console/customers/{customer_id}/edit",
                         {**base, "name": "Jean-Loïc Dupont", "external_id": "", "tax_exempt": "on"})
    assert saved.status_code == 303 and saved.headers["Location"].endswith("?done=customers_saved")
    stored = shop.get(f"/customers/{customer_id}").json
    assert (stored["name"], stored["external_id"], stored["tax_exempt"]) == ("Jean-Loïc Dupont", None, True)
    assert search(browser, "loic") == ["Jean-Loïc Dupont"]


# ---------------------------------------------------------------------------
# One customer on one page


def reading(client, merchant_id: str, seq: int, at: datetime, **counters) -> None:
    from tests.integration.test_billing import sqs_event

    body = json.dumps({"seq": seq, "ts": at.isoformat().replace("+00:00", "Z"), "counters": counters,
                       "merchant_id": merchant_id, "device_id": "neksia-0042"})
    response = client.lambda_.invoke("ingest_usage", sqs_event([body]))
    assert response.payload["batchItemFailures"] == [], response.payload


@pytest.fixture
def relationship(client, browser, shop, console_clock):
    """A walk-in customer subscribed at the counter (no card: its first
    invoice stays open), paid 20.00 in cash, credited 1.00, with a device
    that made 12 montages; the audit and report feeds delivered."""
    from app import report_feed

    offer_id = offer(shop)
    form = browser.get("/console/customers/new")
    created = browser.post("/console/customers/new", walk_in_fields(
        browser, form, offer_id=offer_id, options=[f"{offer_id}:express"], external_id="ERP-77"))
    customer_id = re.search(r"(cus_[0-9a-z]+)", created.headers["Location"]).group(1)
    [subscription] = shop.get(f"/subscriptions?customer_id={customer_id}").json["data"]
    [invoice] = shop.get(f"/invoices?customer_id={customer_id}").json["data"]
    assert shop.post(f"/invoices/{invoice['id']}/payments", {"method": "cash", "amount": "20.00",
                                                             "reference": "caisse 3"}).status == 201
    note = shop.post(f"/invoices/{invoice['id']}/credit-notes", {"amount": "1.00", "reason": "goodwill",
                                                                 "refund": "none"})
    assert note.status == 201, note
    assert shop.post("/devices", {"device_id": "neksia-0042", "subscription_id": subscription["id"]}).status == 201
    merchant_id = shop.merchant["id"]
    console_clock.set(NOW + timedelta(hours=1))
    reading(client, merchant_id, 1, NOW + timedelta(hours=1), montages=100)
    console_clock.set(NOW + timedelta(hours=2))
    reading(client, merchant_id, 2, NOW + timedelta(hours=2), montages=112)
    stream = billing_table_stream()
    stream.deliver(report_feed)
    deliver_audit()
    return {"customer_id": customer_id, "subscription": subscription, "invoice": invoice, "note": note.json,
            "offer_id": offer_id}


def test_the_customer_page_shows_the_whole_relationship(browser, relationship):
    customer_id = relationship["customer_id"]
    page = browser.get(f"/console/customers/{customer_id}")
    assert page.status_code == 200
    text = browser.text(page)
    invoice, note, subscription = relationship["invoice"], relationship["note"], relationship["subscription"]
    # Details and card.
    assert "jean@dupont.fr" in text and "ERP-77" in text and "Aucune carte enregistrée" in text
    # Subscriptions: badge, offer, options, link.
    assert '<span class="badge incomplete">En attente de carte</span>' in text
    assert f'<a href="/console/subscriptions/{subscription["id"]}">Clic&amp;O Neksia</a>' in text
    assert "4h on-site" in text and "Se renouvelle" in text
    # Invoices with their PDF, payments, credit notes.
    assert f'<a href="/console/invoices/{invoice["id"]}">{invoice["number"]}</a>' in text
    assert f'/console/invoices/{invoice["id"]}/pdf' in text
    assert '<span class="badge open">À payer</span>' in text
    assert "Espèces" in text and "20,00" in text and "caisse 3" in text
    assert note["number"] in text and f'/console/credit-notes/{note["id"]}/pdf' in text
    # The device and its usage chart (12 montages today).
    assert "neksia-0042" in text and "Consommation « montages » par jour" in text
    assert "montages : 112" in text
    assert re.search(r"<td>02/11</td><td class=\"num\">12</td>", text)
    # The open alert (no card for the first invoice) and the e-mail it makes.
    alerts = text[text.index('id="h-alerts"'):text.index('id="h-emails"')]
    emails = text[text.index('id="h-emails"'):text.index('id="h-timeline"')]
    assert "Échec de paiement" in alerts and "Échec de paiement</strong> · à votre équipe" in emails
    # The timeline: who did what, newest first.
    assert "Historique des changements" in text
    timeline = text[text.index("Historique des changements"):]
    assert "owner@optique-durand.fr" in timeline and "Fiche client</strong>" not in timeline
    assert "Fiche client créé(e)" in timeline and "Abonnement</a> créé(e)" in timeline
    assert re.search(r"clé d’API [0-9A-Za-z_]+", timeline), "the API key's writes name the key"
    assert timeline.index("Facture</a> modifié(e)") < timeline.index("Fiche client créé(e)")
    assert "Reste à payer : 94.80 → 74.80" in timeline  # the cash payment


def test_the_pdfs_stream_with_the_session_and_only_the_merchants(client, browser, relationship, new_merchant):
    def pdf(path, who=browser):
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in who.cookies.items()), "Accept": "*/*"}
        return client.http.get(path, headers=headers)

    answer = pdf(f"/console/invoices/{relationship['invoice']['id']}/pdf")
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/pdf"
    assert answer.body[:4] == b"%PDF"
    answer = pdf(f"/console/credit-notes/{relationship['note']['id']}/pdf")
    assert answer.status_code == 200 and answer.body[:4] == b"%PDF"
    signed_out = client.http.get(f"/console/invoices/{relationship['invoice']['id']}/pdf", headers={"Accept": "*/*"})
    assert signed_out.status_code == 303
    other = new_merchant(name="Optique Martin", owner_email="owner@martin.fr", owner_password="Martin-pass-2026")
    stranger = Browser(client)
    stranger.sign_in("owner@martin.fr", "Martin-pass-2026")
    assert pdf(f"/console/invoices/{relationship['invoice']['id']}/pdf", stranger).status_code == 404
    assert pdf(f"/console/credit-notes/{relationship['note']['id']}/pdf", stranger).status_code == 404
    assert other


def test_another_merchants_customer_or_an_unknown_id_is_the_404_page(client, browser, shop, new_merchant):
    other = new_merchant(name="Optique Martin", owner_email="owner@martin.fr", owner_password="Martin-pass-2026")
    theirs = customer(other, "Client de Martin")
    mine = customer(shop, "Client de Durand")
    for path in (f"/console/customers/{theirs}", f"/console/customers/{theirs}/edit", "/console/customers/cus_nope",
                 "/console/customers/" + "cus_" + "0" * 26):
        answer = browser.get(path)
        assert answer.status_code == 404 and "Page introuvable" in browser.text(answer), path
    edit = browser.post(f"/console/customers/{theirs}/edit", {"csrf_token": browser.csrf(), "name": "Pris"})
    assert edit.status_code == 404 and other.get(f"/customers/{theirs}").json["name"] == "Client de Martin"
    assert search(browser, "client") == ["Client de Durand"]
    assert browser.get(f"/console/customers/{mine}").status_code == 200


def test_the_customer_page_reads_a_bounded_number_of_times(client, browser, shop, relationship):
    """Whatever the customer's history: the same requests with one
    subscription and invoice as with three, and never a Scan."""
    from tests.bench.harness import AwsMeter, dynamodb_requests

    customer_id = relationship["customer_id"]
    path = f"/console/customers/{customer_id}"
    meter = AwsMeter().install()
    try:
        assert browser.get(path).status_code == 200  # the offer is remembered a minute after this
        meter.take()
        assert browser.get(path).status_code == 200
        counts = dynamodb_requests(meter.take()[0])
        for _ in range(2):
            subscribe(shop, customer_id, relationship["offer_id"])
        deliver_audit()
        meter.take()
        assert browser.get(path).status_code == 200
        more = dynamodb_requests(meter.take()[0])
    finally:
        meter.uninstall()
    total = sum(counts.values())
    print(f"customer page: {total} DynamoDB requests {dict(counts)}")
    assert "Scan" not in counts and "Scan" not in more
    assert more == counts
    # Session 1; customer and merchant 2; the relationship's sections 11
    # (subscriptions, invoices, devices and their BatchGet, alerts with the
    # customer, its subscriptions and its failed invoices, payments, credit
    # notes); the page's invoices, timeline, offer, usage and e-mails 5.
    assert total <= 18, counts


def test_a_list_page_reads_one_query_per_row_at_most(browser, shop):
    from tests.bench.harness import AwsMeter, dynamodb_requests

    for n in range(30):
        customer(shop, f"Garage Dupré {n:02d}")
    meter = AwsMeter().install()
    try:
        measured = {}
        for path in ("/console/customers", "/console/customers?q=dupre", "/console/customers?q=dupre@example.fr",
                     "/console/customers?status=active"):
            meter.take()
            assert browser.get(path).status_code == 200
            measured[path] = dynamodb_requests(meter.take()[0])
    finally:
        meter.uninstall()
    print("list pages:", measured)
    assert all("Scan" not in counts for counts in measured.values())
    # The session, the listing (and the BatchGet of a name search), one Query per row shown.
    assert sum(measured["/console/customers"].values()) == 2 + 25
    assert sum(measured["/console/customers?q=dupre"].values()) == 2 + 2 + 25  # external id, names, BatchGet
    assert sum(measured["/console/customers?status=active"].values()) <= 3
