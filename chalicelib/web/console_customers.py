"""The console's customers: the list (search by name, e-mail or external
id, filter by subscription status, pages by cursor), a walk-in customer at
the counter (with, in the same form, a subscription), and the edit form.
A customer who exists takes a new subscription on a form of its own (a
second machine, a contract renewed). The customer's own page is
console_customer_page.py.

Forms are checked with the API's request models (api/customers.py,
api/subscriptions.py), field by field, so an error shows beside the input
the API's `param` names, with the API's words. The walk-in form carries a
one-time token, generated when it is rendered: its post runs once, through
the API's Idempotency-Key mechanism (`billing_forms.once_per_form`), and a second
post of the same form (a double click) is answered with the first one's
answer, so it makes one customer.
"""
from __future__ import annotations

from datetime import date, datetime, timezone
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from chalice import Blueprint

from chalicelib.domain.errors import BillingError, InvalidRequest, NotFound
from chalicelib.domain.lifecycle import STATUSES
from chalicelib.web.billing_forms import new_form_token, once_per_form
from chalicelib.web.pages import Visit, page, redirect
from chalicelib.web.render import render, text

blueprint = Blueprint(__name__)

PAGE_SIZE = 25
CUSTOMER_FIELDS = ("name", "email", "country", "external_id", "locale")
LOCALES = ("fr", "en")
PLACEHOLDER_CUSTOMER = "cus_" + "0" * 26


# ---------------------------------------------------------------------------
# The list


@page(blueprint, "/console/customers")
def customer_list(visit: Visit):
    from chalicelib.services import customers, subscriptions

    q = (visit.query("q") or "").strip()
    status = visit.query("status") or ""
    cursor = visit.query("cursor") or None
    errors: dict[str, str] = {}
    rows, next_cursor = [], None
    try:
        if status and status not in STATUSES:
            raise InvalidRequest(f"status: one of {', '.join(STATUSES)}", param="status")
        if q:
            rows, next_cursor = customers.search_customers(visit.merchant_id, q, limit=PAGE_SIZE, cursor=cursor)
        elif status:
            rows, next_cursor = customers.customers_with_subscription_status(
                visit.merchant_id, status, limit=PAGE_SIZE, cursor=cursor)
        else:
            rows, next_cursor = customers.list_customers(visit.merchant_id, limit=PAGE_SIZE, cursor=cursor)
    except InvalidRequest as error:
        errors[error.param if error.param in ("q", "status") else "q"] = explained(visit, error.param, error.message)
    # Each row's subscriptions: one Query of its item collection.
    held = {row["id"]: subscriptions.customer_subscriptions(visit.merchant_id, row["id"]) for row in rows}
    if q and status:
        rows = [row for row in rows if any(s["status"] == status for s in held[row["id"]])]
    return render(visit, "customers.html", status=400 if errors else 200, q=q, chosen=status, errors=errors,
                  statuses=STATUSES, first_page=_list_url(q, status, None) if cursor else None,
                  next_page=_list_url(q, status, next_cursor) if next_cursor else None,
                  rows=[{**row, "statuses": _status_counts(held[row["id"]])} for row in rows])


def _list_url(q: str, status: str, cursor: str | None) -> str:
    query = urlencode({k: v for k, v in (("q", q), ("status", status), ("cursor", cursor)) if v})
    return "/console/customers" + (f"?{query}" if query else "")


def _status_counts(subscriptions: list[dict]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for subscription in subscriptions:
        counts[subscription["status"]] = counts.get(subscription["status"], 0) + 1
    return sorted(counts.items(), key=lambda pair: STATUSES.index(pair[0]) if pair[0] in STATUSES else 99)


# ---------------------------------------------------------------------------
# A walk-in customer


@page(blueprint, "/console/customers/new")
def new_customer_form(visit: Visit):
    visit.session.require("serve")
    return _walk_in_form(visit, values={"country": _home_country(visit), "start_at": _today(visit)})


@page(blueprint, "/console/customers/new", methods=("POST",), action="serve")
def create_walk_in_customer(visit: Visit):
    def reused():
        # What the first post made stands; the values are offered again.
        values = {name: visit.form(name) for name in (*CUSTOMER_FIELDS, "offer_id", "start_at")}
        values["tax_exempt"] = visit.form("tax_exempt") == "on"
        return _walk_in_form(visit, values=values, status=409,
                             errors={"form_token": text(visit.lang, "customers_form_used")})

    return once_per_form(visit, lambda: _create_walk_in(visit), reused)


def _create_walk_in(visit: Visit):
    from chalicelib.services import customers, subscriptions

    values = {name: visit.form(name) for name in (*CUSTOMER_FIELDS, "offer_id", "start_at")}
    values["country"] = values["country"].upper()
    values["tax_exempt"] = visit.form("tax_exempt") == "on"
    offer_id = values["offer_id"]
    chosen = [v.partition(":")[2] for v in visit.form_list("options") if v.partition(":")[0] == offer_id]
    values["options"] = chosen
    fields = {name: values[name] for name in CUSTOMER_FIELDS if values[name]}
    fields["tax_exempt"] = values["tax_exempt"]
    errors = customer_errors(visit, fields, required=True)
    subscription = None
    if offer_id:
        subscription, problems = _subscription_body(visit, offer_id, chosen, values["start_at"])
        errors.update(problems)
    if errors:
        return _walk_in_form(visit, values=values, errors=errors, status=400)
    try:
        customer = customers.create_customer(visit.merchant_id, fields)
    except BillingError as error:
        if error.param not in CUSTOMER_FIELDS:
            raise
        return _walk_in_form(visit, values=values, errors={error.param: explained(visit, error.param, error.message)},
                             status=error.status)
    done = "customers_created"
    if subscription is not None:
        try:
            subscriptions.create_subscription(visit.merchant_id, {**subscription, "customer_id": customer["id"]},
                                              visit.session.actor)
            done = "customers_created_subscribed"
        except BillingError:
            done = "customers_subscription_failed"
    return redirect(f"/console/customers/{customer['id']}?done={done}")


def _subscription_body(visit: Visit, offer_id: str, options: list[str], start_text: str) -> tuple[dict | None, dict]:
    """The subscription part of the walk-in form as the API's body (less
    the customer, not made yet), or its errors. What only the service would
    find once the customer exists (an unknown or archived offer, an option
    it does not have) is checked first, so the customer is not made alone."""
    from pydantic import ValidationError

    from chalicelib.api.subscriptions import NewSubscription
    from chalicelib.domain.errors import invalid_request_from_validation_error
    from chalicelib.services import offers

    body = {"customer_id": PLACEHOLDER_CUSTOMER, "offer_id": offer_id, "options": options}
    if start_text and start_text < _today(visit):
        return None, {"start_at": text(visit.lang, "customers_start_past")}
    start_at = _start_at(visit, start_text)
    if start_at is not None:
        body["start_at"] = start_at
    try:
        model = NewSubscription.model_validate(body)
    except ValidationError as invalid:
        error = invalid_request_from_validation_error(invalid)
        param = (error.param or "offer_id").split("[")[0]
        return None, {param: explained(visit, param, error.message)}
    try:
        offer = offers.get_offer(visit.merchant_id, offer_id)
    except NotFound:
        return None, {"offer_id": text(visit.lang, "customers_offer_unknown")}
    if offer["status"] != "active":
        return None, {"offer_id": text(visit.lang, "customers_offer_archived")}
    unknown = sorted(set(options) - {o["code"] for o in offer.get("options", [])})
    if unknown:
        return None, {"options": text(visit.lang, "customers_option_unknown", options=", ".join(unknown))}
    fields = model.model_dump()
    fields["phases"] = []
    del fields["customer_id"]
    return fields, {}


def _start_at(visit: Visit, start_text: str) -> str | None:
    """A start day of the form as an instant: today (or nothing) is now; a
    later day its midnight in the merchant's time zone. Anything else goes
    to the API's model as typed, for its message."""
    if not start_text:
        return None
    try:
        day = date.fromisoformat(start_text)
    except ValueError:
        return start_text
    zone = ZoneInfo(_merchant(visit).get("timezone") or "UTC")
    from chalicelib.clock import clock

    return None if day == clock().now().astimezone(zone).date() else _midnight(day, zone)


def _midnight(day: date, zone: ZoneInfo) -> str:
    moment = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


def _walk_in_form(visit: Visit, *, values: dict, errors: dict | None = None, status: int = 200):
    from chalicelib.services import offers

    catalog, _ = offers.list_offers(visit.merchant_id, limit=100)
    return render(visit, "customer_new.html", status=status, values=values, errors=errors or {},
                  offers=[o for o in catalog if o["status"] == "active"], locales=LOCALES,
                  # A new token for every rendering: a corrected form is a new request.
                  form_token=new_form_token())


# ---------------------------------------------------------------------------
# A new subscription for a customer who exists (a second machine, a renewal)


@page(blueprint, "/console/customers/{customer_id}/subscriptions/new")
def new_subscription_form(visit: Visit, customer_id: str):
    from chalicelib.services import customers

    visit.session.require("serve")
    customer = customers.get_customer(visit.merchant_id, customer_id)
    return _subscription_form(visit, customer, values={"start_at": _today(visit)})


@page(blueprint, "/console/customers/{customer_id}/subscriptions", methods=("POST",), action="serve")
def subscribe_customer(visit: Visit, customer_id: str):
    """The form's post, once per form token (as the walk-in form's): a
    double click makes one subscription."""
    from chalicelib.services import customers

    customer = customers.get_customer(visit.merchant_id, customer_id)
    return once_per_form(visit, lambda: _subscribe(visit, customer), lambda: _subscription_form(
        visit, customer, values=_subscription_values(visit), status=409,
        errors={"form_token": text(visit.lang, "customers_subscribe_form_used")}))


def _subscription_values(visit: Visit) -> dict:
    offer_id = visit.form("offer_id")
    chosen = [v.partition(":")[2] for v in visit.form_list("options") if v.partition(":")[0] == offer_id]
    return {"offer_id": offer_id, "options": chosen, "start_at": visit.form("start_at")}


def _subscribe(visit: Visit, customer: dict):
    from chalicelib.services import subscriptions

    values = _subscription_values(visit)
    if not values["offer_id"]:
        errors = {"offer_id": text(visit.lang, "customers_invalid_offer_id")}
        return _subscription_form(visit, customer, values=values, errors=errors, status=400)
    body, errors = _subscription_body(visit, values["offer_id"], values["options"], values["start_at"])
    if errors:
        return _subscription_form(visit, customer, values=values, errors=errors, status=400)
    try:
        subscriptions.create_subscription(visit.merchant_id, {**body, "customer_id": customer["id"]},
                                          visit.session.actor)
    except BillingError as error:
        param = (error.param or "").split("[")[0] or "form"
        return _subscription_form(visit, customer, values=values, status=error.status,
                                  errors={param: explained(visit, param, error.message)})
    return redirect(f"/console/customers/{customer['id']}?done=customers_subscribed")


def _subscription_form(visit: Visit, customer: dict, *, values: dict, errors: dict | None = None,
                       status: int = 200):
    from chalicelib.services import offers

    catalog, _ = offers.list_offers(visit.merchant_id, limit=100)
    return render(visit, "subscription_new.html", status=status, customer=customer, values=values,
                  errors=errors or {}, offers=[o for o in catalog if o["status"] == "active"],
                  form_token=new_form_token())


# ---------------------------------------------------------------------------
# Editing a customer


@page(blueprint, "/console/customers/{customer_id}/edit")
def edit_customer_form(visit: Visit, customer_id: str):
    from chalicelib.services import customers

    visit.session.require("serve")
    customer = customers.customer_details(visit.merchant_id, customer_id)
    return render(visit, "customer_edit.html", customer=customer, values=customer, errors={}, locales=LOCALES)


@page(blueprint, "/console/customers/{customer_id}/edit", methods=("POST",), action="serve")
def save_customer(visit: Visit, customer_id: str):
    from chalicelib.services import customers

    customer = customers.customer_details(visit.merchant_id, customer_id)
    values = {name: visit.form(name) for name in CUSTOMER_FIELDS}
    values["country"] = values["country"].upper()
    values["tax_exempt"] = visit.form("tax_exempt") == "on"
    # The API's PATCH: what changed; an emptied field is null (external id
    # and locale are cleared, the others refused).
    changes = {name: values[name] or None for name in CUSTOMER_FIELDS if (values[name] or None) != customer[name]}
    if values["tax_exempt"] != customer["tax_exempt"]:
        changes["tax_exempt"] = values["tax_exempt"]
    errors = customer_errors(visit, {k: v for k, v in changes.items() if v is not None}, required=False)
    for name in [k for k, v in changes.items() if v is None and k not in ("external_id", "locale")]:
        errors.setdefault(name, explained(visit, name, f"{name}: cannot be null"))
    if not errors:
        try:
            customers.update_customer(visit.merchant_id, customer_id, changes)
        except BillingError as error:
            if error.param not in CUSTOMER_FIELDS and error.code != "version_conflict":
                raise
            errors[error.param if error.param in CUSTOMER_FIELDS else "form"] = explained(
                visit, error.param, error.message)
    if errors:
        return render(visit, "customer_edit.html", status=400, customer=customer, values=values, errors=errors,
                      locales=LOCALES)
    return redirect(f"/console/customers/{customer_id}?done=customers_saved")


# ---------------------------------------------------------------------------
# Shared


def customer_errors(visit: Visit, fields: dict, *, required: bool) -> dict[str, str]:
    """Every field's problem, as the API's customer models state it (one
    field at a time, so each input gets its own message), then what the
    new customer's model requires."""
    from pydantic import ValidationError

    from chalicelib.api.customers import CustomerFields, NewCustomer
    from chalicelib.domain.errors import invalid_request_from_validation_error

    errors = {}
    for name, value in fields.items():
        try:
            CustomerFields.model_validate({name: value})
        except ValidationError as invalid:
            error = invalid_request_from_validation_error(invalid)
            errors[name] = explained(visit, name, error.message)
    if required and not errors:
        try:
            NewCustomer.model_validate(fields)
        except ValidationError as invalid:
            error = invalid_request_from_validation_error(invalid)
            errors[error.param or "name"] = explained(visit, error.param, error.message)
    return errors


def explained(visit: Visit, param: str | None, message: str) -> str:
    """The API's message, after what it means for the field in plain words."""
    lead = text(visit.lang, f"customers_invalid_{param}") if param else None
    if not lead or lead == f"customers_invalid_{param}":
        return message
    return f"{lead} ({message})"


def _merchant(visit: Visit) -> dict:
    """The merchant, read once per request."""
    from chalicelib.services import merchants

    if not hasattr(visit, "merchant"):
        visit.merchant = merchants.get_merchant(visit.merchant_id)
    return visit.merchant


def _home_country(visit: Visit) -> str:
    rates = _merchant(visit).get("tax_rates") or {}
    return "FR" if "FR" in rates or not rates else sorted(rates)[0]


def _today(visit: Visit) -> str:
    from chalicelib.clock import clock

    return clock().now().astimezone(ZoneInfo(_merchant(visit).get("timezone") or "UTC")).date().isoformat()
