"""The console's catalog: the list of offers, a new offer, one offer with
its versions, archiving it and a new version of its prices.

The forms name their inputs by the API's paths (`components[1].unit_amount`),
so `visit.fields()` rebuilds the body of `POST /offers` (or of `POST
/offers/{id}/versions`), which goes through the same model
(domain/catalog.py) and the same service (services/offers.py) as the API:
every problem is reported under the `param` the API would name, and shown
beside the input of that name. Rows of components and options left empty
are dropped and the rest renumbered before the check, and the form is
rendered again from what was checked, so an error's row is the row shown.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from chalice import Blueprint

from chalicelib.domain.errors import Conflict, InvalidRequest
from chalicelib.web.billing_forms import new_form_token, once_per_form
from chalicelib.web.pages import Visit, page, redirect
from chalicelib.web.render import render, text

blueprint = Blueprint(__name__)

PAGE_SIZE = 25
INTERVALS = ("day", "week", "month", "year")
FORM_TYPES = ("flat", "metered")
# What a component row always shows; other settings of a component (tiers,
# T&M rates...) are shown when the current version has them.
COMPONENT_INPUTS = ("code", "type", "amount", "unit_amount", "meter", "included_units")
OPTION_INPUTS = ("code", "name", "amount", "entitlements")
OFFER_INPUTS = ("code", "name", "currency", "billing_interval", "interval_count", "trial_days",
                "commitment_months", "ladder", "tier_rank", "entitlements")
ROW_GROUPS = ("components", "options")
# A comma typed as the decimal mark ("1,20") is the decimal the API reads ("1.20").
_DECIMAL_COMMA = re.compile(r"^-?\d+,\d+$")
NOTICES = {"offers_created": "ok", "offers_version_added": "ok", "offers_archived": "ok"}


# ---------------------------------------------------------------------------
# The catalog


@page(blueprint, "/console/offers")
def offer_catalog(visit: Visit):
    from chalicelib.services import offers

    cursor = visit.query("cursor") or None
    listed, next_cursor = offers.list_offers(visit.merchant_id, limit=PAGE_SIZE, cursor=cursor)
    rows = [{**offer, "flat_price": flat_price(offer["components"]),
             "interval": interval_text(visit.lang, offer["billing_interval"], offer["interval_count"])}
            for offer in listed]
    done = visit.query("done")
    return render(visit, "offers.html", rows=rows, may_serve=visit.session.may("serve"),
                  first_page="/console/offers" if cursor else None,
                  next_page=f"/console/offers?cursor={next_cursor}" if next_cursor else None,
                  notice=(done, NOTICES[done]) if done in NOTICES else None)


def flat_price(components: list[dict]) -> str:
    """The offer's fixed price per period: its flat components (as the ladder counts it)."""
    return str(sum((Decimal(c["amount"]) for c in components if c.get("type") == "flat"), Decimal(0)))


def interval_text(lang: str, unit: str, count: int) -> str:
    if count == 1:
        return text(lang, f"offers_every_{unit}")
    return text(lang, f"offers_every_{unit}_n", n=count)


# ---------------------------------------------------------------------------
# A new offer


@page(blueprint, "/console/offers/new")
def new_offer_form(visit: Visit):
    from chalicelib.services import merchants

    visit.session.require("serve")
    merchant = merchants.get_merchant(visit.merchant_id)
    values = {"currency": merchant["default_currency"], "billing_interval": "month", "interval_count": "1",
              "trial_days": "0", "commitment_months": "0",
              "components": [{"type": "flat"}, {"type": "metered"}], "options": [{}]}
    return _offer_form(visit, values)


@page(blueprint, "/console/offers/new", methods=("POST",), action="serve")
def create_offer_from_form(visit: Visit):
    typed = typed_rows(visit)
    grown = _added_row(visit, typed)
    if grown is not None:
        return _offer_form(visit, grown)
    return once_per_form(visit, lambda: _create(visit, typed), lambda: _offer_form(
        visit, typed, {"form": text(visit.lang, "offers_form_used")}, status=409))


def _create(visit: Visit, typed: dict):
    from pydantic import ValidationError

    from chalicelib.domain.catalog import Offer
    from chalicelib.services import offers

    try:
        offer = offers.create_offer(visit.merchant_id, Offer.model_validate(api_body(typed)))
    except ValidationError as invalid:
        return _offer_form(visit, typed, problems_beside(visit, invalid, _names(typed)), status=400)
    except InvalidRequest as error:
        return _offer_form(visit, typed, error_beside(visit, error, _names(typed)), status=400)
    return redirect(f"/console/offers/{offer['id']}?done=offers_created")


def _offer_form(visit: Visit, values: dict, errors: dict | None = None, *, status: int = 200):
    return render(visit, "offer_new.html", status=status, values=shown(values), errors=errors or {},
                  names=_names(values), intervals=INTERVALS, types=FORM_TYPES, form_token=new_form_token())


# ---------------------------------------------------------------------------
# One offer: its versions, archive, a new version


@page(blueprint, "/console/offers/{offer_id}")
def offer_page(visit: Visit, offer_id: str):
    from chalicelib.services import merchants, offers

    offer = offers.get_offer(visit.merchant_id, offer_id)
    merchant = merchants.get_merchant(visit.merchant_id)
    values = {"effective_from": _next_month(merchant), "components": [dict(c) for c in offer["components"]],
              "options": [dict(o) for o in offer["options"]]}
    return _offer_page(visit, offer, merchant, values)


@page(blueprint, "/console/offers/{offer_id}/archive", methods=("POST",), action="serve")
def archive_offer_from_console(visit: Visit, offer_id: str):
    from chalicelib.services import offers

    offers.archive_offer(visit.merchant_id, offer_id)
    return redirect(f"/console/offers/{offer_id}?done=offers_archived")


@page(blueprint, "/console/offers/{offer_id}/versions", methods=("POST",), action="serve")
def add_offer_version(visit: Visit, offer_id: str):
    from chalicelib.services import merchants, offers

    offer = offers.get_offer(visit.merchant_id, offer_id)
    merchant = merchants.get_merchant(visit.merchant_id)
    typed = typed_rows(visit, skip=("effective_from",))
    typed["effective_from"] = visit.form("effective_from")
    grown = _added_row(visit, typed)
    if grown is not None:
        return _offer_page(visit, offer, merchant, grown)
    return once_per_form(visit, lambda: _add_version(visit, offer, merchant, typed), lambda: _offer_page(
        visit, offer, merchant, typed, {"form": text(visit.lang, "offers_form_used")}, status=409))


def _add_version(visit: Visit, offer: dict, merchant: dict, values: dict):
    from pydantic import ValidationError

    from chalicelib.domain.catalog import OfferVersion
    from chalicelib.services import offers

    body = api_body(values)
    body["components"] = kept_settings(body.get("components"), offer["components"])
    body["effective_from"] = _midnight(values["effective_from"], merchant.get("timezone"))
    if not values["effective_from"]:
        del body["effective_from"]
    names = _names(values, extra=("effective_from",))
    try:
        offers.add_version(visit.merchant_id, offer["id"], OfferVersion.model_validate(body))
    except ValidationError as invalid:
        return _offer_page(visit, offer, merchant, values, problems_beside(visit, invalid, names), status=400)
    except (InvalidRequest, Conflict) as error:
        if isinstance(error, Conflict) and error.code != "version_conflict":
            raise
        return _offer_page(visit, offer, merchant, values, error_beside(visit, error, names), status=error.status)
    return redirect(f"/console/offers/{offer['id']}?done=offers_version_added")


def _offer_page(visit: Visit, offer: dict, merchant: dict, values: dict, errors: dict | None = None, *,
                status: int = 200):
    from chalicelib.clock import clock

    tz = merchant.get("timezone") or "UTC"
    now = clock().now()
    starts = [_instant(v["effective_from"]) for v in offer["versions"]]
    in_force = max((i for i, start in enumerate(starts) if i == 0 or start <= now), default=0)
    versions = [{**v, "state": "in_force" if i == in_force else ("scheduled" if i > in_force else "replaced")}
                for i, v in enumerate(offer["versions"])]
    current = {c["code"]: c for c in offer["components"]}
    rows = values.get("components") or []
    extras = [_extra_inputs(current.get(row.get("code")), row) for row in rows]
    done = visit.query("done")
    return render(
        visit, "offer.html", status=status, offer=offer, tz=tz, versions=versions,
        interval=interval_text(visit.lang, offer["billing_interval"], offer["interval_count"]),
        flat=flat_price(offer["components"]), components=[_described(visit.lang, c, offer["currency"])
                                                           for c in offer["components"]],
        values=shown(values), extras=extras, kept=[_kept(current.get(row.get("code")), row) for row in rows],
        errors=errors or {}, names=_names(values, extra=("effective_from",)), types=FORM_TYPES,
        may_serve=visit.session.may("serve"),
        notice=(done, NOTICES[done]) if done in NOTICES else None, form_token=new_form_token(),
    )


def kept_settings(rows: list | None, current: list[dict]) -> list:
    """The version's components with what the form does not show of each
    (tiers, lists) taken from the current version's component of the same
    code and type: a new version changes prices, not the shape of a tier
    table that the form cannot draw."""
    by_code = {c["code"]: c for c in current}
    merged = []
    for row in rows or []:
        was = by_code.get(row.get("code")) if isinstance(row, dict) else None
        if was is not None and was.get("type") == row.get("type"):
            row = {**{k: v for k, v in was.items() if not _scalar(v)}, **row}
        merged.append(row)
    return merged


def _scalar(value) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _extra_inputs(current: dict | None, row: dict) -> list[str]:
    """The settings of a component beyond the usual row (an hourly rate, a
    package size...) that the current version has as plain values: shown as
    inputs of their own."""
    names = [k for k, v in (current or {}).items() if k not in COMPONENT_INPUTS and _scalar(v)]
    names += [k for k in row if k not in COMPONENT_INPUTS and k not in names and _scalar(row[k])]
    return names


def _kept(current: dict | None, row: dict) -> list[str]:
    if current is None or current.get("type") != row.get("type"):
        return []
    return [k for k, v in current.items() if not _scalar(v)]


def _described(lang: str, component: dict, currency: str) -> dict:
    """A component of the current terms in a line a shop assistant reads."""
    kind = component["type"]
    price = ""
    if kind == "flat":
        price = text(lang, "offers_price_flat", amount=_price(component["amount"], currency, lang))
    elif kind == "metered" and component.get("tiers"):
        price = text(lang, "offers_price_tiers", count=len(component["tiers"]),
                     mode=text(lang, f"offers_tier_mode_{component.get('tier_mode') or 'graduated'}"))
    elif kind == "metered" and component.get("package_size"):
        price = text(lang, "offers_price_package", amount=_price(component["unit_amount"], currency, lang),
                     size=_decimal(component["package_size"], lang))
    elif kind == "metered":
        price = text(lang, "offers_price_unit", amount=_price(component["unit_amount"], currency, lang))
    elif kind == "time_and_materials":
        price = text(lang, "offers_price_hourly", amount=_price(component["hourly_rate"], currency, lang))
    elif kind == "bonus_malus":
        price = text(lang, "offers_price_bonus_malus", target=_decimal(component["target"], lang))
    meter = component.get("meter") or component.get("hours_meter") or component.get("kpi_meter") or ""
    included = component.get("included_units")
    return {**component, "price": price, "meter_shown": meter,
            "included_shown": _decimal(included, lang) if included not in (None, "0") else ""}


def _price(value, currency: str, lang: str) -> str:
    """A price as the language writes money; a unit price finer than the
    currency's minor unit (0.0042) with all its decimals."""
    from chalicelib.domain.money import minor_units
    from chalicelib.web.render import money

    exponent = Decimal(str(value)).as_tuple().exponent
    if isinstance(exponent, int) and -exponent <= minor_units(currency):
        return money(value, currency, lang)
    return f"{_decimal(value, lang)} {currency}"


def _decimal(value, lang: str) -> str:
    shown_value = str(value)
    return shown_value.replace(".", ",") if lang == "fr" else shown_value


# ---------------------------------------------------------------------------
# The form as the API's body, and its errors beside their inputs


def typed_rows(visit: Visit, *, skip: tuple[str, ...] = ()) -> dict:
    """The form as typed, in the API's shape, with the rows of components
    and options left empty dropped (a row's type alone is no row) and the
    others renumbered: what the form shows again, and what `api_body` reads."""
    typed = visit.fields(skip=("csrf_token", "form_token", "add_row", *skip))
    for group in ROW_GROUPS:
        rows = typed.get(group)
        if isinstance(rows, list):
            typed[group] = [row for row in rows if isinstance(row, dict) and [k for k in row if k != "type"]]
    return typed


def api_body(typed: dict) -> dict:
    """The API's JSON of a typed form: a decimal comma read as a point,
    entitlements typed as a list separated by commas."""
    body = dict(typed)
    if isinstance(body.get("entitlements"), str):
        body["entitlements"] = split_list(body["entitlements"])
    for group in ROW_GROUPS:
        if not isinstance(body.get(group), list):
            continue
        rows = []
        for row in body[group]:
            row = {k: (v.replace(",", ".") if isinstance(v, str) and k != "name" and _DECIMAL_COMMA.match(v) else v)
                   for k, v in row.items()}
            if isinstance(row.get("entitlements"), str):
                row["entitlements"] = split_list(row["entitlements"])
            rows.append(row)
        body[group] = rows
    return body


def split_list(typed: str) -> list[str]:
    return [part for part in re.split(r"[,;\s]+", typed) if part]


def shown(values: dict) -> dict:
    """Values as the form's inputs show them (lists as typed, with commas)."""
    def one(row: dict) -> dict:
        return {k: ", ".join(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v
                for k, v in row.items()}

    result = one(values)
    for group in ROW_GROUPS:
        rows = values.get(group)
        result[group] = [one(row) for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []
    return result


def _names(values: dict, *, extra: tuple[str, ...] = ()) -> set[str]:
    """The names a message can stand beside: the inputs, each row, each group."""
    names = set(OFFER_INPUTS) | set(ROW_GROUPS) | set(extra)
    for group in ROW_GROUPS:
        rows = values.get(group) if isinstance(values.get(group), list) else []
        for i, row in enumerate(rows):
            names.add(f"{group}[{i}]")
            names.update(f"{group}[{i}].{key}" for key in (row if isinstance(row, dict) else {}))
            names.update(f"{group}[{i}].{key}" for key in (COMPONENT_INPUTS if group == "components" else OPTION_INPUTS))
    return names


def beside(param: str | None, names: set[str]) -> str:
    """The input an error's `param` belongs to: itself, or the nearest
    enclosing one shown (`entitlements[2]` -> `entitlements`,
    `components[1].tiers[0].up_to` -> `components[1]`); "form" for none."""
    while param:
        if param in names:
            return param
        cut = max(param.rfind("."), param.rfind("["))
        param = param[:cut] if cut > 0 else ""
    return "form"


def explained(visit: Visit, param: str | None, message: str, code: str | None = None) -> str:
    """The API's message (without its leading field path), after what it
    means in plain words when the field has such words."""
    if param and message.startswith(f"{param}: "):
        message = message[len(param) + 2:]
    field_name = re.sub(r"\[\d+\]", "", param or "").rsplit(".", 1)[-1]
    for key in (f"offers_error_{code}", f"offers_invalid_{field_name}"):
        lead = text(visit.lang, key)
        if lead != key:
            return f"{lead} ({message})"
    return message


def problems_beside(visit: Visit, invalid, names: set[str]) -> dict[str, str]:
    """Every problem pydantic found, each beside its input (the first one
    kept where two fall on the same input)."""
    from chalicelib.domain.errors import validation_problems

    errors: dict[str, str] = {}
    for param, message in validation_problems(invalid):
        errors.setdefault(beside(param, names), explained(visit, param, message))
    return errors


def error_beside(visit: Visit, error, names: set[str]) -> dict[str, str]:
    return {beside(error.param, names): explained(visit, error.param, error.message, error.code)}


def _added_row(visit: Visit, typed: dict) -> dict | None:
    """The form with one more empty row, when its "add a row" button was
    pressed without a script (with one, the row is added in the page)."""
    group = visit.form("add_row")
    if group not in ROW_GROUPS:
        return None
    grown = dict(typed)
    grown[group] = [*(typed.get(group) or []), {"type": "flat"} if group == "components" else {}]
    return grown


def _next_month(merchant: dict) -> str:
    """The first day of next month where the merchant is: a version's usual start."""
    from chalicelib.clock import clock

    today = clock().now().astimezone(ZoneInfo(merchant.get("timezone") or "UTC")).date()
    return (date(today.year + 1, 1, 1) if today.month == 12 else date(today.year, today.month + 1, 1)).isoformat()


def _midnight(typed: str, zone_name: str | None) -> str:
    """A day of the form as its midnight in the merchant's time zone; a
    full instant, or anything else, as typed (the model says what is wrong)."""
    try:
        day = date.fromisoformat(typed)
    except (TypeError, ValueError):
        return typed
    if len(typed) != 10:
        return typed
    moment = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone_name or "UTC")).astimezone(timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


def _instant(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))
