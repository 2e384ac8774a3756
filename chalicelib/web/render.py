"""Pages as HTML: the web face's templates (chalicelib/templates/web), its
texts in French and English, numbers and dates as each language writes
them, and the headers every page carries.

Every page gets a nonce: the one inline style sheet and script of the
layout run under it and nothing else does (Content-Security-Policy), so
a name or a memo typed into a form can never run as script.
"""
from __future__ import annotations

import functools
from datetime import datetime
from decimal import Decimal, InvalidOperation

from chalice import Response

from chalicelib.domain.document_format import format_number
from chalicelib.domain.errors import BillingError
from chalicelib.domain.money import format_decimal
from chalicelib.services.invoice_pdf import format_date, format_money
from chalicelib.web.texts import TEXTS


def text(lang: str, key: str, **values) -> str:
    found = TEXTS[lang].get(key)
    if found is None:
        found = TEXTS["en"].get(key, key)
    return found.format(**values) if values else found


def money(amount, currency: str | None, lang: str) -> str:
    if amount is None or amount == "":
        return "–"
    try:
        return format_money(Decimal(str(amount)), currency or "EUR", lang)
    except (InvalidOperation, KeyError, ValueError):
        return str(amount)


def day(iso: str | None, lang: str, timezone: str = "UTC") -> str:
    return format_date(iso, timezone, lang) if iso else "–"


def moment(iso: str | None, lang: str, timezone: str = "UTC") -> str:
    """Date and time, for the timeline."""
    if not iso:
        return "–"
    from zoneinfo import ZoneInfo

    at = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(ZoneInfo(timezone or "UTC"))
    return at.strftime("%d/%m/%Y %H:%M") if lang == "fr" else at.strftime("%Y-%m-%d %H:%M")


def nonzero(amount) -> bool:
    """Whether a decimal string amount is other than zero (no float on the way)."""
    try:
        return Decimal(str(amount or "0")) != 0
    except InvalidOperation:
        return False


def number(value, lang: str) -> str:
    """A quantity or a rate without its trailing zeros ("12.000000" is 12),
    in the language's decimal mark."""
    if value is None:
        return "–"
    try:
        exact = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if exact.is_finite():
        value = format_decimal(exact.normalize())
    return format_number(value, lang)


def render(visit, template: str, *, status: int = 200, headers: dict | None = None, **context) -> Response:
    lang = visit.lang
    body = _templates().get_template(f"web/{template}").render(
        visit=visit, lang=lang, session=visit.session, nonce=visit.nonce,
        t=lambda key, **values: text(lang, key, **values), path=visit.path, **context,
    )
    policy = (
        f"default-src 'none'; script-src 'nonce-{visit.nonce}'; style-src 'nonce-{visit.nonce}'; "
        "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    return Response(body=body, status_code=status, headers={
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": policy,
        "Cache-Control": "no-store",
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
        **(headers or {}),
    })


ERROR_TITLES = {400: "error_400", 403: "error_403", 404: "error_404", 409: "error_409", 429: "error_429"}


def error_page(visit, error: BillingError | None) -> Response:
    """A page for what went wrong: what it is, and the way back."""
    status = error.status if error is not None else 500
    title = ERROR_TITLES.get(status, "error_500")
    detail = error.message if error is not None and status in (400, 409) else None
    return render(visit, "error.html", status=status, title_key=title, detail=detail)


@functools.lru_cache(maxsize=1)
def _templates():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("chalicelib", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["money"] = money
    env.filters["day"] = day
    env.filters["moment"] = moment
    env.filters["number"] = number
    env.tests["nonzero"] = nonzero
    return env
