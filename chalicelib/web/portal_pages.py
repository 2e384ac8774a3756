"""The customer portal's pages (services/portal.py).

- `GET /portal?merchant=` and `POST /portal`: ask for a link by e-mail (the
  same answer whether or not the address is a customer's)
- `GET /portal/{token}`: subscriptions, invoices, card, usage chart
- `POST /portal/{token}/subscriptions/{subscription_id}/cancel` | `/keep` | `/change`
- `GET /portal/{token}/invoices/{invoice_id}/pdf`
- `GET /portal/{token}/card` and `POST /portal/{token}/card/complete`: the
  payment page's card form for this customer

Public: the link's token is the credential; every form also carries the
session's CSRF token and a one-time form token (a double click acts once).
Writes are the API's services acting as `customer`.
"""
from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from typing import Annotated, Callable

from chalice import Blueprint, Response
from pydantic import BaseModel, StringConstraints

from chalicelib.actor import CUSTOMER, acting_as
from chalicelib.api.fields import STRICT
from chalicelib.api.http import Call, Route, endpoint
from chalicelib.domain.errors import BillingError, Conflict, InvalidRequest
from chalicelib.web import self_service
from chalicelib.web.billing_forms import new_form_token, once_per_form
from chalicelib.web.charts import bar_chart
from chalicelib.web.pages import FORM, Visit, cookie_header, cookies, page, redirect
from chalicelib.web.render import text

blueprint = Blueprint(__name__)

REQUEST_COOKIE = "portal_form"
CHART_COLOURS = ("#2f5bea", "#157f3c", "#9a6700", "#7a8fb8", "#b42318")
DONE = ("canceled", "kept", "changed")
PROBLEMS = ("commitment", "refused", "form_used")


@dataclass
class PortalVisitor:
    """Who the portal's request acts for: one customer of one merchant."""

    session: object
    token: str
    csrf_token: str

    @property
    def merchant_id(self) -> str:
        return self.session.merchant_id

    @property
    def customer_id(self) -> str:
        return self.session.customer_id

    @property
    def base(self) -> str:
        return f"/portal/{self.token}"


def portal_page(path: str, *, methods: tuple[str, ...] = ("GET",), answers: str = "text/html") -> Callable:
    """Register `view(visit, **path_params)` behind a portal link."""

    def register(view: Callable) -> Callable:
        @functools.wraps(view)
        def handle(token: str, **path_params: str) -> Response:
            from chalicelib.services import portal

            request = blueprint.current_request
            visit = self_service.visit_of(request)
            try:
                session = portal.open_portal(token)
            except BillingError as error:
                merchant_id = portal.merchant_of_link(token)
                return self_service.refusal_page(visit, error, face="portal",
                                                 new_link=f"/portal?merchant={merchant_id}" if merchant_id else None)
            visit.session = PortalVisitor(session, token, portal.csrf_token(session))
            try:
                if request.method == "POST":
                    portal.check_csrf(session, visit.form("csrf_token"))
                with acting_as(CUSTOMER):
                    return view(visit, **path_params)
            except BillingError as error:
                return self_service.refusal_page(visit, error, face="portal")

        content_types = [FORM] if "POST" in methods else ["application/json"]
        handle.routes = {method: Route(path, method, "public", 200, view, answers, tuple(content_types))
                         for method in methods}
        blueprint.route(path, methods=list(methods), content_types=content_types)(handle)
        return view

    return register


# -- asking for a link by e-mail --------------------------------------------------------


@page(blueprint, "/portal", auth="public")
def portal_request_link(visit: Visit):
    """The e-mail form. A double-submit token (cookie and field) guards its post."""
    visit.lang = self_service.language_for(visit.request)
    merchant_id = visit.query("merchant") or ""
    return _request_form(visit, merchant_id)


@page(blueprint, "/portal", methods=("POST",), auth="public")
def portal_send_link(visit: Visit):
    from chalicelib.services import portal

    visit.lang = self_service.language_for(visit.request)
    merchant_id = visit.form("merchant")
    email = visit.form("email")
    sent = visit.form("form_csrf")
    if not sent or not secrets.compare_digest(sent, cookies(visit.request).get(REQUEST_COOKIE) or ""):
        return _request_form(visit, merchant_id, email=email, problem="portal_form_used", status=400)
    if not _is_email(email):
        return _request_form(visit, merchant_id, email=email, problem="portal_request_bad_email", status=400)
    if _is_merchant_id(merchant_id):
        portal.send_link_by_email(merchant_id, email)
    # The same answer whether the address is known or not.
    return self_service.page(visit, "portal_request.html", merchant_id=merchant_id, email=email, sent=True,
                             problem=None, form_csrf="")


def _request_form(visit: Visit, merchant_id: str, *, email: str = "", problem: str | None = None,
                  status: int = 200) -> Response:
    form_csrf = secrets.token_urlsafe(18)
    answer = self_service.page(visit, "portal_request.html", status=status, merchant_id=merchant_id, email=email,
                               sent=False, problem=problem, form_csrf=form_csrf)
    answer.headers["Set-Cookie"] = cookie_header(REQUEST_COOKIE, form_csrf, max_age=3600, path="/portal")
    return answer


def _is_email(value: str) -> bool:
    from pydantic import TypeAdapter, ValidationError

    from chalicelib.api.fields import Email

    try:
        TypeAdapter(Email).validate_python(value)
    except ValidationError:
        return False
    return True


def _is_merchant_id(value: str) -> bool:
    import re

    return bool(re.fullmatch(r"mer_[0-9a-z]{26}", value or ""))


# -- the customer's pages ----------------------------------------------------------------


@portal_page("/portal/{token}")
def portal_overview(visit: Visit):
    from chalicelib.services import portal

    shown = portal.overview(visit.session.session)
    visit.lang = self_service.language_for(visit.request, shown["customer"].get("locale")
                                           or shown["merchant"].get("locale"))
    done = visit.query("done")
    problem = visit.query("problem")
    return self_service.page(
        visit, "portal.html", p=shown, base=visit.session.base, csrf_token=visit.session.csrf_token,
        form_token=new_form_token, tz=shown["merchant"].get("timezone") or "UTC",
        done=done if done in DONE else None, problem=problem if problem in PROBLEMS else None,
        charts=[bar_chart(text(visit.lang, "portal_usage_of", device=u["device_id"], meter=u["meter"]),
                          [day[8:10] + "/" + day[5:7] for day in u["days"]],
                          [(u["meter"], CHART_COLOURS[i % len(CHART_COLOURS)], u["values"])],
                          first_column="portal_day", label_every=5)
                for i, u in enumerate(shown["usage"])],
    )


@portal_page("/portal/{token}/subscriptions/{subscription_id}/cancel", methods=("POST",))
def portal_cancel(visit: Visit, subscription_id: str):
    from chalicelib.services import portal

    return _act(visit, lambda: portal.cancel_at_period_end(visit.session.session, subscription_id), "canceled")


@portal_page("/portal/{token}/subscriptions/{subscription_id}/keep", methods=("POST",))
def portal_keep(visit: Visit, subscription_id: str):
    from chalicelib.services import portal

    return _act(visit, lambda: portal.keep_subscription(visit.session.session, subscription_id), "kept")


@portal_page("/portal/{token}/subscriptions/{subscription_id}/change", methods=("POST",))
def portal_change(visit: Visit, subscription_id: str):
    from chalicelib.services import portal

    offer_id = visit.form("offer_id")
    return _act(visit, lambda: portal.change_offer(visit.session.session, subscription_id, offer_id), "changed")


@portal_page("/portal/{token}/invoices/{invoice_id}/pdf", answers="application/pdf")
def portal_invoice_pdf(visit: Visit, invoice_id: str):
    from chalicelib.services import portal

    document, filename = portal.invoice_pdf(visit.session.session, invoice_id)
    return Response(body=document, status_code=200, headers={
        "Content-Type": "application/pdf", "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


@portal_page("/portal/{token}/card")
def portal_card(visit: Visit):
    from chalicelib.api import payment_page as payment_page_api
    from chalicelib.services import portal

    return payment_page_api.card_form_response(portal.card_page(visit.session.session), back_url=visit.session.base)


class PortalCardSaved(BaseModel):
    model_config = STRICT

    setup_intent: Annotated[str, StringConstraints(min_length=1, max_length=255)]


@endpoint(blueprint, "/portal/{token}/card/complete", methods=("POST",), auth="public", response="CardSaved")
def portal_card_complete(call: Call, token: str):
    from chalicelib.services import portal

    setup_intent = call.body(PortalCardSaved).setup_intent
    return portal.card_saved(portal.open_portal(token), setup_intent)


def _act(visit: Visit, run: Callable[[], dict], done: str) -> Response:
    """The action once per form token, then back to the overview saying how it went."""
    base = visit.session.base

    def attempt():
        try:
            run()
        except Conflict as refused:
            problem = "commitment" if refused.code == "commitment_active" else "refused"
            return redirect(f"{base}?problem={problem}")
        except InvalidRequest as invalid:
            if invalid.param == "form_token":
                raise
            return redirect(f"{base}?problem=refused")
        return redirect(f"{base}?done={done}")

    return once_per_form(visit, attempt, lambda: redirect(f"{base}?problem=form_used"))
