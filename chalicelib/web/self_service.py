"""What the customer's own pages share (the hosted checkout,
web/checkout_page.py; the portal, web/portal_pages.py): their language,
their layout's headers, and refusals as pages a customer reads.

They are public: a link's token is their only credential, so every answer
keeps it out of referrers and caches."""
from __future__ import annotations

import uuid

from chalice import Response

from chalicelib.domain.errors import BillingError
from chalicelib.observability import logger
from chalicelib.web.pages import LANGUAGES, Visit, language
from chalicelib.web.render import render

SELF_SERVICE_HEADERS = {"Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex, nofollow"}


def visit_of(request, preferred_locale: str | None = None) -> Visit:
    request_id = (request.context or {}).get("requestId") or str(uuid.uuid4())
    logger.append_keys(request_id=request_id)
    return Visit(request=request, request_id=request_id, lang=language_for(request, preferred_locale))


def language_for(request, preferred_locale: str | None = None) -> str:
    """`?lang=` when the customer chose, else the customer's own locale, else the browser's."""
    chosen = (request.query_params or {}).get("lang")
    if chosen in LANGUAGES:
        return chosen
    if preferred_locale:
        return "fr" if preferred_locale.lower().startswith("fr") else "en"
    return language(request)


def page(visit: Visit, template: str, *, status: int = 200, stripe_origins: list[str] | None = None,
         **context) -> Response:
    """A page of the layout `web/self_service_base.html`; `stripe_origins`
    for a page that loads Stripe.js (its frames and its API)."""
    headers = dict(SELF_SERVICE_HEADERS)
    if stripe_origins:
        stripe = " ".join(stripe_origins)
        headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{visit.nonce}' {stripe}; style-src 'nonce-{visit.nonce}'; "
            f"connect-src 'self' {stripe}; frame-src {stripe}; img-src 'self' data:; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        )
    return render(visit, template, status=status, headers=headers, other_lang="en" if visit.lang == "fr" else "fr",
                  **context)


def refusal_page(visit: Visit, error: BillingError | None, *, face: str, new_link: str | None = None) -> Response:
    """404 (not a link of ours, or another customer's), 410 (expired), 400
    and 409 (what the state refuses, its message), anything else "try later"."""
    status = error.status if error is not None else 500
    if status == 404:
        title, message = "link_invalid_title", "link_invalid_text"
    elif status == 410:
        title, message = "link_expired_title", f"link_expired_{face}"
    elif status in (400, 409):
        title, message = "page_refused_title", None
    else:
        title, message = "page_unavailable_title", "page_unavailable_text"
        status = 503 if status in (429, 503) else 500
    detail = error.message if error is not None and status in (400, 409) else None
    logger.info("self-service page refused", extra={"status": status, "code": getattr(error, "code", None)})
    return page(visit, "self_service_message.html", status=status, title_key=title, message_key=message,
                detail=detail, new_link=new_link if status in (404, 410) else None)
