"""What the console's forms share: one-time form tokens and a post run once
per token (`once_per_form`, every form of the console); and for the billing
forms (a subscription's page, console_billing.py; an invoice's,
console_invoices.py): a post run once per token (the API's Idempotency-Key mechanism, `http.once_per_key`),
the API's request models checking the form, and errors as a person reads
them beside the input they are about, or on the page when the state
refuses.
"""
from __future__ import annotations

import secrets
from datetime import date, datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from chalicelib.domain.errors import BillingError, Conflict, InvalidRequest, NotFound
from chalicelib.web.pages import Visit, redirect
from chalicelib.web.render import text

# A form token is `secrets.token_urlsafe(18)`: 24 characters.
FORM_TOKEN_CHARS = (16, 64)
# How long a second post of a form waits for the first one's answer.
DOUBLE_POST_WAIT_SECONDS = 8.0


class FieldProblem(Exception):
    """What the form itself says is wrong with one of its inputs (before the API's model)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class StateProblem(Exception):
    """What the page says, in its language, of an action the state refuses."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.message = message
        self.status = status


def new_form_token() -> str:
    return secrets.token_urlsafe(18)


def form_token(visit: Visit) -> str:
    token = visit.form("form_token")
    if not FORM_TOKEN_CHARS[0] <= len(token) <= FORM_TOKEN_CHARS[1]:
        raise InvalidRequest("this form has expired; open it again", param="form_token")
    return token


def once_per_form(visit: Visit, run, reused):
    """`run()` once per form token (`http.once_per_key`): a second post of the
    same form (a double click) gets the first one's answer; the same token
    sent with other values (an old tab, the back button) is answered by
    `reused()`, and what the first post made stands."""
    from chalicelib.api.http import once_per_key

    token = form_token(visit)
    try:
        return once_per_key(visit, f"console-form:{token}", run, wait_seconds=DOUBLE_POST_WAIT_SECONDS)
    except Conflict as error:
        if error.code != "idempotency_mismatch":
            raise
        return reused()


def run_form(visit: Visit, form: str | None, fields: dict[str, str], run, *, done_at: str, again):
    """`run()` once per form token, answered by a redirect to `done_at`
    with the text key it returns; `again(errors=... | problem=..., status=...)`
    renders the page again when the input is wrong (400) or the state
    refuses (409). A second post of the same token gets the first answer."""

    def attempt():
        try:
            done = run()
        except FieldProblem as problem:
            return again(errors={problem.field: problem.message}, status=400)
        except StateProblem as problem:
            return again(problem=problem.message, status=problem.status)
        except (InvalidRequest, NotFound) as error:
            if isinstance(error, NotFound) and not error.param:
                raise
            field = field_of(fields, error.param)
            if field is None:
                return again(problem=explained(visit, error), status=400)
            return again(errors={field: explained(visit, error)}, status=400)
        except Conflict as refused:
            return again(problem=refusal(visit, refused), status=409)
        except BillingError as error:
            if error.status != 402:
                raise
            return again(problem=text(visit.lang, "billing_card_declined", code=error.code), status=402)
        return redirect(f"{done_at}?done={done}")

    return once_per_form(visit, attempt, lambda: again(problem=text(visit.lang, "billing_form_used"), status=409))


def field_of(fields: dict[str, str], param: str | None) -> str | None:
    """The input of the form an API `param` is about (`options[1]` -> `options`)."""
    if not param:
        return next(iter(fields.values()), None)
    if param in fields.values():
        return param
    head = param.split("[")[0].split(".")[0]
    return fields.get(head) or next(iter(fields.values()), None)


def valid(model, body: dict):
    """`body` checked by an API request model, or InvalidRequest naming the field."""
    from pydantic import ValidationError

    from chalicelib.domain.errors import invalid_request_from_validation_error

    try:
        return model.model_validate(body)
    except ValidationError as invalid:
        raise invalid_request_from_validation_error(invalid) from None


def explained(visit: Visit, error: BillingError) -> str:
    """The API's message after what it means in plain words, when the field is one staff know."""
    head = (error.param or "").split("[")[0].split(".")[-1]
    lead = text(visit.lang, f"billing_invalid_{head}") if head else None
    if not lead or lead == f"billing_invalid_{head}":
        return error.message
    return f"{lead} ({error.message})"


def refusal(visit: Visit, error: BillingError) -> str:
    """What the state refused, in the page's language: the domain's reason
    when it has a text for it, else the API's message after a plain lead."""
    for key in (f"billing_refused_{getattr(error, 'reason', '')}", f"billing_refused_{error.code}"):
        found = text(visit.lang, key)
        if found != key:
            return found
    return f"{text(visit.lang, 'billing_refused')} ({error.message})"


def decimal_input(value: str) -> str:
    """An amount as typed (`12,50`, `1 234.50`) as the API's decimal string."""
    return value.replace("\u202f", "").replace("\xa0", "").replace(" ", "").replace(",", ".")


def day_to_instant(value: str, timezone_name: str) -> str | None:
    """A day of a date input as an instant: today is now (None); another
    day its midnight in the merchant's time zone. Anything else goes to the
    API's model as typed, for its message."""
    from chalicelib.clock import clock

    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return value
    zone = ZoneInfo(timezone_name or "UTC")
    if day == clock().now().astimezone(zone).date():
        return None
    moment = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


def left_to_credit(invoice: dict) -> Decimal:
    return Decimal(invoice["total"]) - Decimal(invoice["amount_credited"] or "0")
