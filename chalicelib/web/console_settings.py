"""The console's settings: the merchant's own fields (name, taxes, dunning,
alert e-mails, locale, time zone, and whatever else `PATCH /merchant`
takes), its API keys and its staff. Everyone reads them; only an owner
changes them (`action="manage"`: staff and viewers get the 403 page).

The merchant form is drawn from the API's own model (api/merchants.py
`MerchantFields`), field by field: a field the model gains is shown (a
nested model as its inputs, a map as rows, a list as text separated by
commas) without this page changing. Each changed field is checked by that
model alone, so each input gets its own message, then all of them together,
and saved by the service `PATCH /merchant` calls. API keys and staff go
through the same services as `/merchant/api-keys` and `/merchant/users`.
"""
from __future__ import annotations

import re
import types
import typing

from chalice import Blueprint

from chalicelib.domain.errors import BillingError, InvalidRequest
from chalicelib.web.pages import Visit, page, redirect
from chalicelib.web.render import render, text

blueprint = Blueprint(__name__)

# How the known fields are typed in; any other field gets its kind from its type.
KINDS = {"alert_emails": "list", "dunning_retry_days": "list", "tax_rates": "map", "locale": "locale"}
LOCALES = ("fr", "en")
# A rate typed with a decimal comma ("5,5") is the rate the API reads ("5.5").
_DECIMAL_COMMA = re.compile(r"^-?\d+,\d+$")
NOTICES = {"settings_saved": "ok", "settings_key_revoked": "ok", "settings_member_added": "ok",
           "settings_member_invited": "ok", "settings_member_removed": "ok"}


# ---------------------------------------------------------------------------
# The page


@page(blueprint, "/console/settings")
def settings_page(visit: Visit):
    return _settings(visit)


def _settings(visit: Visit, *, values: dict | None = None, errors: dict | None = None, key_errors: dict | None = None,
              member: dict | None = None, member_errors: dict | None = None, new_key: dict | None = None,
              status: int = 200):
    from chalicelib.config import settings
    from chalicelib.services import merchants, staff

    merchant = merchants.get_merchant(visit.merchant_id)
    members = staff.list_members(visit.merchant_id)
    owners = [m for m in members if m["role"] == "owner"]
    fields = merchant_fields()
    values = values if values is not None else form_values(merchant, fields)
    done = visit.query("done")
    return render(
        visit, "settings.html", status=status, merchant=merchant, fields=fields, values=values,
        groups=list(dict.fromkeys(field["group"] for field in fields)),
        errors=errors or {}, names=input_names(fields, values),
        keys=merchant.get("api_keys", []), key_errors=key_errors or {}, new_key=new_key,
        members=members, last_owner=owners[0]["email"] if len(owners) == 1 else None,
        member=member or {"role": "staff"}, member_errors=member_errors or {}, roles=("owner", "staff", "viewer"),
        deployed=settings().is_deployed, may_manage=visit.session.may("manage"), locales=LOCALES,
        notice=(done, NOTICES[done]) if done in NOTICES else None,
    )


# ---------------------------------------------------------------------------
# The merchant's fields


def merchant_fields(model=None) -> list[dict]:
    """The fields of `PATCH /merchant` (or of `model`) as the form draws
    them: {"name", "kind", "parts", "group"}; kind is text, locale, list
    (typed separated by commas), map (rows of key and value) or object (a
    nested model: its own fields, `parts`). The model's own fields come
    first (group ""), then those it inherits, grouped by the class that
    declares them (its name)."""
    if model is None:
        from chalicelib.api.merchants import MerchantFields as model
    described = []
    for name, info in model.model_fields.items():
        group = next((c.__name__ for c in model.__mro__ if name in c.__dict__.get("__annotations__", {})), "")
        nested = _nested_model(info.annotation)
        if name in KINDS:
            kind, parts = KINDS[name], ()
        elif nested is not None:
            kind, parts = "object", tuple(nested.model_fields)
        else:
            kind, parts = _kind_of(info.annotation), ()
        described.append({"name": name, "kind": kind, "parts": parts,
                          "group": "" if group == model.__name__ else group})
    return sorted(described, key=lambda field: field["group"] != "")


def _nested_model(annotation):
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for inner in typing.get_args(annotation):
        found = _nested_model(inner)
        if found is not None:
            return found
    return None


def _kind_of(annotation) -> str:
    origins = set()

    def walk(hint):
        origin = typing.get_origin(hint)
        if origin is typing.Annotated:
            walk(typing.get_args(hint)[0])
            return
        if origin is not None:
            origins.add(origin)
            if origin in (typing.Union, types.UnionType):
                for inner in typing.get_args(hint):
                    walk(inner)
            return
        origins.add(hint)

    walk(annotation)
    if dict in origins:
        return "map"
    if list in origins:
        return "list"
    return "text"


def input_names(fields: list[dict], values: dict) -> set[str]:
    """The inputs of the merchant form (a message for none of them shows at the top)."""
    names = set()
    for field in fields:
        name = field["name"]
        if field["kind"] == "map":
            names.add(name)
            for i, _ in enumerate(values.get(name) or [{}]):
                names.update({f"{name}[{i}].key", f"{name}[{i}].value"})
        elif field["kind"] == "object":
            names.update(f"{name}.{part}" for part in field["parts"])
        else:
            names.add(name)
    return names


def form_values(merchant: dict, fields: list[dict]) -> dict:
    """The merchant's values as the form shows them."""
    values = {}
    for field in fields:
        current = merchant.get(field["name"])
        if field["kind"] == "list":
            values[field["name"]] = ", ".join(str(v) for v in current or [])
        elif field["kind"] == "map":
            values[field["name"]] = [{"key": k, "value": str(v)} for k, v in sorted((current or {}).items())]
        elif field["kind"] == "object":
            values[field["name"]] = {part: "" if (current or {}).get(part) is None else str(current[part])
                                     for part in field["parts"]}
        else:
            values[field["name"]] = "" if current is None else str(current)
    return values


@page(blueprint, "/console/settings", methods=("POST",), action="manage")
def save_settings(visit: Visit):
    from chalicelib.services import merchants

    fields = merchant_fields()
    typed = typed_values(visit, fields)
    group = visit.form("add_row")
    if group in [f["name"] for f in fields if f["kind"] == "map"]:
        typed[group] = [*typed[group], {"key": "", "value": ""}]
        return _settings(visit, values=typed)
    merchant = merchants.get_merchant(visit.merchant_id)
    changes, errors = merchant_changes(visit, fields, typed, merchant)
    if not errors and changes:
        try:
            merchants.update_merchant(visit.merchant_id, _checked(visit, fields, changes, typed))
        except InvalidRequest as error:
            errors[beside(error.param, fields, typed)] = explained(visit, error.param, error.message)
        except BillingError as error:
            if error.code != "version_conflict":
                raise
            errors["form"] = explained(visit, None, error.message)
    if errors:
        return _settings(visit, values=typed, errors=errors, status=400)
    return redirect("/console/settings?done=settings_saved")


def typed_values(visit: Visit, fields: list[dict]) -> dict:
    """The form as typed, in the form's shape (map rows left empty dropped)."""
    sent = visit.fields(skip=("csrf_token", "add_row"))
    typed = {}
    for field in fields:
        name, value = field["name"], sent.get(field["name"])
        if field["kind"] == "map":
            rows = value if isinstance(value, list) else []
            typed[name] = [{"key": str(r.get("key", "")), "value": str(r.get("value", ""))}
                           for r in rows if isinstance(r, dict) and (r.get("key") or r.get("value"))]
        elif field["kind"] == "object":
            value = value if isinstance(value, dict) else {}
            typed[name] = {part: value.get(part, "") if isinstance(value.get(part, ""), str) else ""
                           for part in field["parts"]}
        else:
            typed[name] = value if isinstance(value, str) else ""
    return typed


def merchant_changes(visit: Visit, fields: list[dict], typed: dict, merchant: dict) -> tuple[dict, dict]:
    """What the form changes, in the API's JSON, and each field's problem
    as the API's model states it (one field at a time)."""
    changes, errors = {}, {}
    for field in fields:
        name, kind = field["name"], field["kind"]
        current = merchant.get(name)
        if kind == "map":
            value, row_errors = _map_value(visit, name, typed[name])
            errors.update(row_errors)
            if row_errors or value == {k: str(v) for k, v in (current or {}).items()}:
                continue
        elif kind == "list":
            value = [part for part in re.split(r"[,;\s]+", typed[name]) if part]
            if value == [str(v) for v in current or []]:
                continue
        elif kind == "object":
            value = {part: v for part, v in typed[name].items() if v}
            was = {part: str(v) for part, v in (current or {}).items() if v not in (None, "")}
            if value == was:
                continue
            if not value and not clears(name):
                errors[f"{name}.{field['parts'][0]}"] = text(visit.lang, "settings_cannot_empty")
                continue
            value = value or None
        else:
            value = typed[name]
            if value == ("" if current is None else str(current)):
                continue
            if not value and not clears(name):
                errors[name] = text(visit.lang, "settings_cannot_empty")
                continue
            value = value or None
        problem = _problem(visit, {name: value}, fields, typed)
        if problem:
            errors.setdefault(*problem)
        else:
            changes[name] = value
    return changes, errors


def clears(name: str) -> bool:
    """Whether the API's PATCH clears this field with a null (a legal
    field) rather than leaving it as it is (the merchant's name)."""
    from pydantic import ValidationError

    from chalicelib.api.merchants import MerchantFields

    try:
        return name in MerchantFields.model_validate({name: None}).changes()
    except ValidationError:
        return False


def _map_value(visit: Visit, name: str, rows: list[dict]) -> tuple[dict, dict]:
    """A map typed as rows, and each row's problem beside its key or value."""
    value, errors = {}, {}
    for i, row in enumerate(rows):
        key = row["key"].upper() if name == "tax_rates" else row["key"]
        amount = row["value"].replace(",", ".") if _DECIMAL_COMMA.match(row["value"]) else row["value"]
        if not key:
            errors[f"{name}[{i}].key"] = text(visit.lang, "settings_map_key_missing")
            continue
        if key in value:
            errors[f"{name}[{i}].key"] = text(visit.lang, "settings_key_twice", key=key)
            continue
        if name == "tax_rates" and _problem(visit, {name: {key: "0"}}, [], {}):
            errors[f"{name}[{i}].key"] = text(visit.lang, "settings_tax_rates_key_invalid")
            continue
        problem = _problem(visit, {name: {key: amount}}, [], {})
        if problem:
            errors[f"{name}[{i}].value"] = problem[1]
            continue
        value[key] = amount
    return value, errors


def _problem(visit: Visit, data: dict, fields: list[dict], typed: dict) -> tuple[str, str] | None:
    """The first problem the API's model finds in `data`, as (input, message)."""
    from pydantic import ValidationError

    from chalicelib.api.merchants import MerchantFields
    from chalicelib.domain.errors import validation_problems

    try:
        MerchantFields.model_validate(data)
    except ValidationError as invalid:
        param, message = validation_problems(invalid)[0]
        param = param or next(iter(data))
        return beside(param, fields, typed), explained(visit, param, message)
    return None


def _checked(visit: Visit, fields: list[dict], changes: dict, typed: dict) -> dict:
    """The changes as the API's PATCH reads them (the rules across fields included)."""
    from pydantic import ValidationError

    from chalicelib.api.merchants import MerchantFields
    from chalicelib.domain.errors import invalid_request_from_validation_error

    try:
        return MerchantFields.model_validate(changes).changes()
    except ValidationError as invalid:
        raise invalid_request_from_validation_error(invalid) from None


def beside(param: str | None, fields: list[dict], typed: dict) -> str:
    """The input a `param` of the API is about: `alert_emails[1]` ->
    `alert_emails`, `tax_rates.FR` -> that country's rate, `address.city`
    itself; "form" when none."""
    if not param:
        return "form"
    head = re.split(r"[.\[]", param, maxsplit=1)[0]
    field = next((f for f in fields if f["name"] == head), None)
    if field is None:
        return "form"
    if field["kind"] == "map" and param.startswith(f"{head}."):
        key = param[len(head) + 1:]
        for i, row in enumerate(typed.get(head, [])):
            if row["key"].upper() == key.upper():
                return f"{head}[{i}].value"
    if field["kind"] == "object":
        part = param[len(head) + 1:].split(".")[0].split("[")[0]
        if part in field["parts"]:
            return f"{head}.{part}"
    return head if field["kind"] != "object" else f"{head}.{field['parts'][0]}"


def explained(visit: Visit, param: str | None, message: str, *, texts: str = "settings_invalid_") -> str:
    """The API's message for a field, led by the page's own words for that
    field (the text `{texts}{field}`) when there are some."""
    if param and message.startswith(f"{param}: "):
        message = message[len(param) + 2:]
    key = f"{texts}{re.split(r'[.[]', param or '', maxsplit=1)[0]}"
    lead = text(visit.lang, key)
    return message if lead == key else f"{lead} ({message})"


# ---------------------------------------------------------------------------
# API keys


@page(blueprint, "/console/settings/api-keys", methods=("POST",), action="manage")
def create_api_key_from_console(visit: Visit):
    """A new key, shown on this answer only (it is kept hashed)."""
    from chalicelib.services import merchants

    return _settings(visit, new_key=merchants.create_api_key(visit.merchant_id))


@page(blueprint, "/console/settings/api-keys/revoke", methods=("POST",), action="manage")
def revoke_api_key_from_console(visit: Visit):
    from chalicelib.services import merchants

    prefix = visit.form("prefix")
    try:
        merchants.revoke_api_key(visit.merchant_id, prefix)
    except InvalidRequest as error:
        return _settings(visit, key_errors={"prefix": text(visit.lang, "settings_last_key")
                                            if error.param == "prefix" else error.message}, status=400)
    return redirect("/console/settings?done=settings_key_revoked")


# ---------------------------------------------------------------------------
# Staff


@page(blueprint, "/console/settings/staff", methods=("POST",), action="manage")
def add_staff_member(visit: Visit):
    from pydantic import ValidationError

    from chalicelib.api.staff import NewStaffUser
    from chalicelib.config import settings
    from chalicelib.domain.errors import validation_problems
    from chalicelib.services import staff

    typed = {name: visit.form(name) for name in ("email", "role", "password")}
    body = {k: v for k, v in typed.items() if v and not (k == "password" and settings().is_deployed)}
    errors: dict[str, str] = {}
    try:
        NewStaffUser.model_validate(body)
    except ValidationError as invalid:
        for param, message in validation_problems(invalid):
            errors.setdefault(param if param in typed else "email", _member_message(visit, param, message))
    if not settings().is_deployed and not typed["password"]:
        errors.setdefault("password", text(visit.lang, "settings_password_needed"))
    if not errors:
        try:
            staff.add_member(visit.merchant_id, body["email"], body["role"], body.get("password"),
                             actor=visit.session.actor)
        except BillingError as error:
            if error.param not in typed and error.code != "user_exists":
                raise
            errors[error.param if error.param in typed else "email"] = _member_message(
                visit, error.param or error.code, error.message)
    if errors:
        return _settings(visit, member={**typed, "password": ""}, member_errors=errors, status=400)
    done = "settings_member_invited" if settings().is_deployed else "settings_member_added"
    return redirect(f"/console/settings?done={done}")


def _member_message(visit: Visit, param: str | None, message: str) -> str:
    return explained(visit, param, message, texts="settings_member_invalid_")


@page(blueprint, "/console/settings/staff/remove", methods=("POST",), action="manage")
def remove_staff_member(visit: Visit):
    from chalicelib.services import staff

    email = staff.normalized_email(visit.form("email"))
    members = staff.list_members(visit.merchant_id)
    leaving = next((m for m in members if m["email"] == email), None)
    if leaving is not None and leaving["role"] == "owner" and sum(m["role"] == "owner" for m in members) == 1:
        # Someone must be left to manage the account (its settings, its staff).
        return _settings(visit, member_errors={"remove": text(visit.lang, "settings_last_owner")}, status=400)
    staff.remove_member(visit.merchant_id, email)  # NotFound: the 404 page
    return redirect("/console/settings?done=settings_member_removed")
