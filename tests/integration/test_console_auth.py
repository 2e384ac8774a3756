"""Staff accounts (Cognito on moto) and console sessions: sign-in, roles,
CSRF, sign-out, password reset, tenancy."""
from __future__ import annotations

from tests.integration.console_client import OWNER, Browser


def test_the_owner_signs_in_and_lands_on_the_dashboard(client, shop):
    browser = Browser(client)
    answer = browser.sign_in(*OWNER)
    assert answer.status_code == 303 and answer.headers["Location"] == "/console"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = browser.get("/console")
    assert page.status_code == 200
    assert "Tableau de bord · Optique Durand" in browser.text(page)


def test_a_wrong_password_is_refused_without_saying_which_part_is_wrong(client, shop):
    browser = Browser(client)
    for email, password in [(OWNER[0], "Not-the-pass-1"), ("nobody@example.com", OWNER[1])]:
        answer = browser.sign_in(email, password)
        assert answer.status_code == 401
        assert "L’adresse e-mail ou le mot de passe n’est pas correct." in browser.text(answer)
    assert "console_session" not in browser.cookies


def test_a_page_without_a_session_leads_to_the_sign_in_and_back(client, shop):
    browser = Browser(client)
    answer = browser.get("/console?q=dur")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/console/login?next=/console%3Fq%3Ddur"


def test_a_sign_in_post_from_another_site_is_refused(client, shop):
    browser = Browser(client)
    answer = browser.post("/console/login", {"email": OWNER[0], "password": OWNER[1], "login_token": "forged"})
    assert answer.status_code == 400
    assert "console_session" not in browser.cookies


def test_a_form_without_its_csrf_token_changes_nothing(client, shop):
    browser = Browser(client)
    browser.sign_in(*OWNER)
    answer = browser.post("/console/logout", {"csrf_token": "forged"})
    assert answer.status_code == 403
    assert browser.get("/console").status_code == 200  # still signed in
    answer = browser.post("/console/logout", {"csrf_token": browser.csrf()})
    assert answer.status_code == 303 and answer.headers["Location"] == "/console/login?done=signed_out"
    assert browser.get("/console").status_code == 303


def test_users_are_managed_by_the_api_and_a_removed_member_loses_access_at_once(client, shop):
    added = shop.post("/merchant/users", {"email": "Vendeur@Optique-Durand.fr", "role": "staff",
                                          "password": "Staff-pass-2026"})
    assert added.status == 201, added
    assert added.json == {"object": "staff_user", "email": "vendeur@optique-durand.fr", "role": "staff",
                          "created_at": added.json["created_at"]}
    assert shop.post("/merchant/users", {"email": "vendeur@optique-durand.fr", "role": "viewer"}).status == 409
    listed = shop.get("/merchant/users").json["data"]
    assert {(u["email"], u["role"]) for u in listed} == {(OWNER[0], "owner"), ("vendeur@optique-durand.fr", "staff")}
    browser = Browser(client)
    assert browser.sign_in("vendeur@optique-durand.fr", "Staff-pass-2026").status_code == 303
    assert browser.get("/console").status_code == 200
    removed = shop.delete("/merchant/users/vendeur@optique-durand.fr")
    assert removed.status == 200 and removed.json == {"email": "vendeur@optique-durand.fr", "deleted": True}
    assert browser.get("/console").status_code == 303  # the session ended with the membership
    assert Browser(client).sign_in("vendeur@optique-durand.fr", "Staff-pass-2026").status_code == 401
    assert shop.delete("/merchant/users/vendeur@optique-durand.fr").status == 404


def test_bad_staff_input_is_a_400_naming_the_field(client, shop):
    for body, param in [({"email": "not-an-email", "role": "staff"}, "email"),
                        ({"email": "a@b.fr", "role": "admin"}, "role"),
                        ({"email": "a@b.fr", "role": "staff", "password": "short"}, "password"),
                        ({"email": "a@b.fr", "role": "staff", "extra": 1}, "extra")]:
        answer = shop.post("/merchant/users", body)
        assert answer.status == 400 and answer.json["error"]["param"] == param, (body, answer)


def test_a_password_the_pool_refuses_leaves_no_merchant_behind(operator, client):
    answer = operator.post("/admin/merchants", {"name": "Weak", "default_currency": "EUR",
                                                "owner_email": "w@weak.fr", "owner_password": "alllowercase"})
    assert answer.status == 400 and answer.json["error"]["param"] == "password", answer
    assert Browser(client).sign_in("w@weak.fr", "alllowercase").status_code == 401


def test_a_forgotten_password_is_replaced_with_the_code_cognito_sends(client, shop):
    browser = Browser(client)
    page = browser.get("/console/password-reset")
    token = browser.hidden(page, "login_token")
    asked = browser.post("/console/password-reset", {"email": OWNER[0], "login_token": token})
    assert asked.status_code == 200 and "un code vient d’y être envoyé" in browser.text(asked)
    # moto's Cognito takes any code; AWS's checks the one it e-mailed.
    done = browser.post("/console/password-reset/confirm", {"email": OWNER[0], "code": "123456",
                                                            "password": "Brand-new-pass-7", "login_token": token})
    assert done.status_code == 303 and done.headers["Location"] == "/console/login?done=password_changed"
    assert Browser(client).sign_in(OWNER[0], "Brand-new-pass-7").status_code == 303
    assert Browser(client).sign_in(*OWNER).status_code == 401


def test_the_sign_in_and_the_language_switch_come_back_to_the_page_of_an_object(client, shop):
    """chalice's request.path is the route's template: the ids are put back."""
    customer = shop.post("/customers", {"name": "Jeanne", "email": "j@example.fr", "country": "FR"}).json
    browser = Browser(client)
    answer = browser.get(f"/console/customers/{customer['id']}")
    assert answer.headers["Location"] == f"/console/login?next=/console/customers/{customer['id']}"
    browser.sign_in(*OWNER)
    page = browser.text(browser.get(f"/console/customers/{customer['id']}"))
    assert f'name="next" value="/console/customers/{customer["id"]}"' in page
