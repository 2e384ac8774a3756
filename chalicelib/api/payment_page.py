"""Payment links and the public payment page.

- `POST /customers/{id}/payment-link` (merchant key) -> `{"url", "expires_at"}`
- `GET /pay/{token}` (public): the HTML page, in the customer's language
- `POST /pay/{token}/complete` (public, JSON from the page's script)

The page is the one HTML route of the API. Its failures must be pages a
customer can read (an expired link is a 410 page, a tampered one a 400
page), so `show_page` renders the domain's errors itself instead of letting
`endpoint()` answer them as JSON.
"""
from __future__ import annotations

import functools
import secrets
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from chalice import Blueprint, Response
from pydantic import BaseModel, StringConstraints

from chalicelib.api.fields import STRICT
from chalicelib.api.http import Call, endpoint
from chalicelib.domain.errors import BillingError
from chalicelib.observability import logger
from chalicelib.services import payment_links, payment_page

blueprint = Blueprint(__name__)


class CardSetupDone(BaseModel):
    model_config = STRICT

    setup_intent: Annotated[str, StringConstraints(min_length=1, max_length=255)]


@endpoint(blueprint, "/customers/{customer_id}/payment-link", methods=("POST",), response="PaymentLink")
def create_payment_link(call: Call, customer_id: str):
    return payment_links.create_payment_link(call.merchant_id, customer_id)


@endpoint(blueprint, "/pay/{token}", auth="public", response="text/html")
def show_page(call: Call, token: str):
    language = _accepted_language(call.request)
    try:
        page = payment_page.payment_page(token)
    except BillingError as error:
        logger.info("payment page refused", extra={"code": error.code, "status": error.status})
        return _error_page(error, language)
    return _html(200, "pay.html", _page_context(page), nonce=secrets.token_urlsafe(16),
                 stripe_origins=_origins(page.stripe_origin))


def card_form_response(page: payment_page.PaymentPage, *, back_url: str | None = None) -> Response:
    """The payment page's form for `page` (services/payment_page.page_for),
    also the customer portal's "replace the card", which links back to it."""
    context = _page_context(page)
    context["back_url"] = back_url
    return _html(200, "pay.html", context, nonce=secrets.token_urlsafe(16), stripe_origins=_origins(page.stripe_origin))


@endpoint(blueprint, "/pay/{token}/complete", methods=("POST",), auth="public", response="CardSaved")
def complete(call: Call, token: str):
    return payment_page.complete(token, call.body(CardSetupDone).setup_intent)


# -- rendering -------------------------------------------------------------------------

TEXTS = {
    "en": {
        "title": "Payment details",
        "intro": "{merchant} will charge this card for your invoices when they are due.",
        "greeting": "Account: {customer}",
        "charges": "What will be charged",
        "due_now": "due now",
        "due_on": "on {date}",
        "current_card": "Card on file: {brand} ending {last4}, expires {month}/{year}. A new card replaces it.",
        "card_label": "Card",
        "submit": "Save card",
        "saving": "Saving…",
        "success": "Thank you. Your card {brand} ending {last4} is saved. You can close this page.",
        "failed": "Your card could not be saved. Please check it and try again.",
        "secure": "Your card details go directly to Stripe, our payment provider; "
                  "{merchant} never sees your card number.",
        "valid_until": "This link is valid until {date}.",
        "back": "Back to your account",
        "months": ["January", "February", "March", "April", "May", "June", "July", "August", "September",
                   "October", "November", "December"],
        "errors": {
            400: ("Invalid link", "This payment link is not valid. Check that you opened the whole link, "
                                  "or ask for a new one."),
            404: ("Unknown account", "This payment link no longer leads to an account."),
            410: ("Link expired", "This payment link has expired. Ask the sender for a new one."),
            503: ("Temporarily unavailable", "The payment service is temporarily unavailable. "
                                             "Please try again in a few minutes."),
        },
    },
    "fr": {
        "title": "Moyen de paiement",
        "intro": "{merchant} prélèvera cette carte pour vos factures à leur échéance.",
        "greeting": "Compte : {customer}",
        "charges": "Ce qui sera prélevé",
        "due_now": "à régler maintenant",
        "due_on": "le {date}",
        "current_card": "Carte enregistrée : {brand} se terminant par {last4}, expire fin {month}/{year}. "
                        "Une nouvelle carte la remplace.",
        "card_label": "Carte bancaire",
        "submit": "Enregistrer la carte",
        "saving": "Enregistrement…",
        "success": "Merci. Votre carte {brand} se terminant par {last4} est enregistrée. "
                   "Vous pouvez fermer cette page.",
        "failed": "Votre carte n’a pas pu être enregistrée. Vérifiez-la et réessayez.",
        "secure": "Vos données de carte sont transmises directement à Stripe, notre prestataire de paiement ; "
                  "{merchant} ne voit jamais votre numéro de carte.",
        "valid_until": "Ce lien est valable jusqu’au {date}.",
        "back": "Retour à votre espace client",
        "months": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre",
                   "octobre", "novembre", "décembre"],
        "errors": {
            400: ("Lien invalide", "Ce lien de paiement n’est pas valide. Vérifiez que vous avez ouvert le lien "
                                   "en entier, ou demandez-en un nouveau."),
            404: ("Compte inconnu", "Ce lien de paiement ne correspond plus à aucun compte."),
            410: ("Lien expiré", "Ce lien de paiement a expiré. Demandez-en un nouveau à l’expéditeur."),
            503: ("Service momentanément indisponible", "Le service de paiement est momentanément indisponible. "
                                                        "Veuillez réessayer dans quelques minutes."),
        },
    },
}


def _page_context(page: payment_page.PaymentPage) -> dict:
    texts = TEXTS[page.language]
    card = page.current_card
    return {
        "lang": page.language,
        "t": texts,
        "merchant": page.merchant_name,
        "intro": texts["intro"].format(merchant=page.merchant_name),
        "greeting": texts["greeting"].format(customer=page.customer_name),
        "secure": texts["secure"].format(merchant=page.merchant_name),
        "valid_until": texts["valid_until"].format(date=_date(page.expires_at, page.language, page.timezone)),
        "current_card": texts["current_card"].format(
            brand=card["brand"].title(), last4=card["last4"], month=f"{card['exp_month']:02d}", year=card["exp_year"]
        ) if card else None,
        "charges": [_charge_line(charge, page) for charge in page.charges],
        "stripe_js_url": page.stripe_js_url,
        # Read by the page's script (rendered with |tojson: safe in HTML).
        "config": {
            "publishableKey": page.publishable_key,
            "clientSecret": page.client_secret,
            "locale": page.language,
            "name": page.customer_name,
            "email": page.customer_email,
            "texts": {name: texts[name] for name in ("saving", "success", "failed", "submit")},
        },
    }


def _charge_line(charge: dict, page: payment_page.PaymentPage) -> dict:
    texts = TEXTS[page.language]
    amount = charge["amount"].replace(".", ",") if page.language == "fr" else charge["amount"]
    if charge["billing_at"] <= page.now:
        when = texts["due_now"]
    else:
        when = texts["due_on"].format(date=_date(charge["billing_at"], page.language, page.timezone))
    return {"name": charge["name"], "amount": f"{amount} {charge['currency']}", "when": when}


def _date(moment: datetime, language: str, timezone: str) -> str:
    local = moment.astimezone(ZoneInfo(timezone))
    return f"{local.day} {TEXTS[language]['months'][local.month - 1]} {local.year}"


def _error_page(error: BillingError, language: str) -> Response:
    """400, 404 and 410 say what is wrong with the link; anything else
    (Stripe unreachable or refusing) asks to come back later."""
    status = error.status if error.status in (400, 404, 410, 503) else 503 if error.status == 429 else 500
    title, message = TEXTS[language]["errors"][status if status in (400, 404, 410) else 503]
    return _html(status, "pay_error.html", {"lang": language, "title": title, "message": message},
                 nonce=secrets.token_urlsafe(16), stripe_origins=[])


def _accepted_language(request) -> str:
    header = (request.headers or {}).get("accept-language", "")
    return payment_page.page_language(header.split(",")[0].strip())


def _origins(origin: str) -> list[str]:
    """What the page may load and call: Stripe.js, its frames and its API
    (Stripe's documented CSP), or the stand-in's one origin."""
    if origin == "https://js.stripe.com":
        return ["https://js.stripe.com", "https://*.js.stripe.com", "https://api.stripe.com",
                "https://hooks.stripe.com"]
    return [origin]


def _html(status: int, template: str, context: dict, *, nonce: str, stripe_origins: list[str]) -> Response:
    body = _templates().get_template(template).render(nonce=nonce, **context)
    stripe = " ".join(stripe_origins)
    frames = stripe or "'none'"
    policy = (
        f"default-src 'none'; script-src 'nonce-{nonce}' {stripe}; style-src 'nonce-{nonce}'; "
        f"connect-src 'self' {stripe}; frame-src {frames}; img-src 'self' data:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    return Response(
        body=body,
        status_code=status,
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": policy,
            # The token is in the URL: never send it to Stripe or anyone as a referrer.
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


@functools.lru_cache(maxsize=1)
def _templates():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("chalicelib", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
