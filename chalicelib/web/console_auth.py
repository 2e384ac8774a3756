"""Signing in and out of the console, a forgotten password, the language.

The sign-in form is protected from cross-site posts before any session
exists by a double-submit token: the page sets it as a cookie and in the
form, and a post whose two copies differ is refused.
"""
from __future__ import annotations

import hmac
import secrets

from chalice import Blueprint

from chalicelib.domain.errors import AuthenticationError, InvalidRequest
from chalicelib.web.pages import (
    LANGUAGE_COOKIE,
    LANGUAGES,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Visit,
    cookie_header,
    page,
    redirect,
    safe_next,
)
from chalicelib.web.render import render, text

blueprint = Blueprint(__name__)

LOGIN_TOKEN_SECONDS = 3600


def _login_form(visit: Visit, *, status: int = 200, email: str = "", refused: str | None = None,
                notice: str | None = None, next_page: str = "/console"):
    token = visit.cookie(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    return render(visit, "login.html", status=status, email=email, refused=refused, notice=notice,
                  next=safe_next(next_page), login_token=token,
                  headers={"Set-Cookie": cookie_header(LOGIN_COOKIE, token, max_age=LOGIN_TOKEN_SECONDS)})


def _login_token_ok(visit: Visit) -> bool:
    cookie, sent = visit.cookie(LOGIN_COOKIE) or "", visit.form("login_token")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), sent.encode())


@page(blueprint, "/console/login", auth="public")
def login_page(visit: Visit):
    from chalicelib.services import staff

    if staff.session_for(visit.cookie(SESSION_COOKIE)) is not None:
        return redirect(safe_next(visit.query("next")))
    notice = visit.query("done")
    return _login_form(visit, next_page=visit.query("next") or "/console",
                       notice=notice if notice in ("signed_out", "password_changed") else None)


@page(blueprint, "/console/login", methods=("POST",), auth="public")
def sign_in(visit: Visit):
    from chalicelib.services import staff

    email, next_page = visit.form("email"), visit.form("next") or "/console"
    if not _login_token_ok(visit):
        return _login_form(visit, status=400, email=email, refused="error_400", next_page=next_page)
    try:
        cookie, _ = staff.sign_in(email, visit.form("password"))
    except AuthenticationError as error:
        refused = "password_change_required" if error.code == "password_change_required" else "sign_in_refused"
        return _login_form(visit, status=401, email=email, refused=refused, next_page=next_page)
    from chalicelib.config import settings

    return redirect(safe_next(next_page), cookies_to_set=[
        cookie_header(SESSION_COOKIE, cookie, max_age=settings().console_session_hours * 3600)])


@page(blueprint, "/console/logout", methods=("POST",), action="read")
def sign_out(visit: Visit):
    from chalicelib.services import staff

    staff.sign_out(visit.session)
    return redirect("/console/login?done=signed_out", cookies_to_set=[cookie_header(SESSION_COOKIE, "", max_age=0)])


@page(blueprint, "/console/language", methods=("POST",), auth="public")
def choose_language(visit: Visit):
    chosen = visit.form("lang")
    target = safe_next(visit.form("next"))
    if chosen not in LANGUAGES:
        return redirect(target)
    return redirect(target, cookies_to_set=[cookie_header(LANGUAGE_COOKIE, chosen, max_age=365 * 86400)])


def _reset_page(visit: Visit, step: str, *, email: str = "", errors: dict | None = None, status: int = 200):
    token = visit.cookie(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    return render(visit, "password_reset.html", status=status, step=step, email=email, errors=errors or {},
                  login_token=token,
                  headers={"Set-Cookie": cookie_header(LOGIN_COOKIE, token, max_age=LOGIN_TOKEN_SECONDS)})


@page(blueprint, "/console/password-reset", auth="public")
def password_reset_page(visit: Visit):
    return _reset_page(visit, "ask")


@page(blueprint, "/console/password-reset", methods=("POST",), auth="public")
def ask_password_reset(visit: Visit):
    from chalicelib.services import staff

    email = visit.form("email")
    if not _login_token_ok(visit):
        return _reset_page(visit, "ask", email=email, status=400, errors={"email": text(visit.lang, "error_400")})
    if "@" not in email:
        return _reset_page(visit, "ask", email=email, status=400,
                           errors={"email": text(visit.lang, "email")})
    staff.start_password_reset(email)
    return _reset_page(visit, "confirm", email=email)


@page(blueprint, "/console/password-reset/confirm", methods=("POST",), auth="public")
def confirm_password_reset(visit: Visit):
    from chalicelib.services import staff

    email = visit.form("email")
    if not _login_token_ok(visit):
        return _reset_page(visit, "confirm", email=email, status=400, errors={"code": text(visit.lang, "error_400")})
    try:
        staff.finish_password_reset(email, visit.form("code"), visit.form("password"))
    except InvalidRequest as error:
        return _reset_page(visit, "confirm", email=email, status=400, errors={error.param or "code": error.message})
    return redirect("/console/login?done=password_changed")
