"""The alerts' e-mails: subject, plain text and HTML, in the recipient's
language (French for `fr`/`fr-XX`, English otherwise), from the jinja2
templates under templates/mail/<language>/<kind>.{txt,html}.

The subject is the `subject` block that opens the text template (its first
line), so subject and body are written side by side. Amounts and dates are formatted as on the invoice PDF
(services/invoice_pdf.py: `1 234,56 €` / `€1,234.56`, dd/mm/yyyy / ISO, in
the merchant's time zone). A card is only ever named by its brand and last
four digits: the alerts never hold more.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from chalicelib.services.invoice_pdf import format_date, format_money, language_of

KINDS = ("card_expiring", "card_expiring_digest", "cancellation_scheduled", "subscription_canceled",
         "payment_failed", "counter_reset", "payment_link", "portal_link", "statement_issued",
         "price_change_notice")
LANGUAGES = ("fr", "en")


@dataclass(frozen=True)
class Mail:
    subject: str
    text: str
    html: str


def render(kind: str, locale: str | None, context: dict, *, timezone: str = "UTC") -> Mail:
    """The e-mail of `kind` for a recipient whose locale is `locale`."""
    if kind not in KINDS:
        raise ValueError(f"no e-mail for {kind!r}")
    language = language_of(locale)
    env = _templates()
    values = {**context, "lang": language, "tz": timezone}
    # The text template's first line is its `subject` block, the rest its body.
    subject, _, text = env.get_template(f"mail/{language}/{kind}.txt").render(values).strip().partition("\n")
    subject = " ".join(subject.split())
    text = text.strip() + "\n"
    html = env.get_template(f"mail/{language}/{kind}.html").render({**values, "subject": subject})
    return Mail(subject=subject, text=text, html=html)


@functools.lru_cache(maxsize=1)
def _templates():
    """HTML templates autoescaped, text templates not (they are plain text)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("chalicelib", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["money"] = lambda amount, currency, lang: format_money(amount, currency, lang)
    env.filters["day"] = lambda iso, tz, lang: format_date(iso, tz, lang)
    env.filters["month"] = lambda card, lang: f"{int(card['exp_month']):02d}/{int(card['exp_year'])}"
    env.filters["card"] = lambda card: f"{card['brand'].capitalize()} •••• {card['last4']}"
    return env
