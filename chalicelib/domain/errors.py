"""The one error hierarchy of the project.

Domain code, the store and the services raise these; the HTTP layer
(chalicelib/api/http.py) is the one place that turns them into API.md's
error object `{"error": {"type", "code", "message", "param"}}`.

Each kind carries its HTTP `status`, its error `type` and a default `code`;
a raise site may pass a more precise `code` (e.g. `Conflict(...,
code="idempotency_mismatch")`, `InvalidRequest(..., code="ladder_violation")`).

`param_from_loc` and `invalid_request_from_validation_error` live here (not
in catalog.py) because every request body, not only offers, turns pydantic's
error locations into the API's field paths.
"""
from __future__ import annotations


class BillingError(Exception):
    """Base of every error the API reports on purpose (anything else is a 500)."""

    status = 500
    type = "api_error"
    code = "api_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, param={self.param!r}, message={self.message!r})"


class InvalidRequest(BillingError):
    """400: the request itself is wrong (a field, a rule of the catalog, a ladder)."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationError(BillingError):
    status = 401
    type = "authentication_error"
    code = "authentication_error"


class Forbidden(BillingError):
    """403: who asks is known, and their role does not allow it (a console
    `viewer` changing something)."""

    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(BillingError):
    """404, also for another merchant's object (no existence oracle)."""

    status = 404
    type = "not_found_error"
    code = "not_found"


class MethodNotAllowed(BillingError):
    """405: the path exists but does not serve this method (the answer's `Allow` lists those it does)."""

    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class Conflict(BillingError):
    """409: the state does not allow it (invalid_state, version_conflict, idempotency_mismatch)."""

    status = 409
    type = "conflict_error"
    code = "conflict"


class RateLimited(BillingError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"


# The tags of the catalog's discriminated union (`type` of a component).
# pydantic inserts the chosen member's tag into an error's location, right
# after the list index: ('components', 1, 'metered', 'tiers', 0, 'up_to').
# It is not a field the client sent, so the API path leaves it out.
UNION_TAGS = frozenset({"flat", "metered", "time_and_materials", "bonus_malus"})


def param_from_loc(loc: tuple) -> str:
    """A pydantic error location as the API's field path.

    ('components', 1, 'metered', 'tiers', 0, 'up_to') -> 'components[1].tiers[0].up_to'
    ('price_overrides', 'montage', 'unit_amount') -> 'price_overrides.montage.unit_amount'

    Dropped: a discriminated-union tag right after a list index, and
    pydantic's internal steps ('function-after[...]', 'list[...]')."""
    path = ""
    previous = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(previous, int) and part in UNION_TAGS:
            pass
        elif not part or "[" in part or "(" in part:
            pass  # an internal step, or a map key that cannot name a field (empty, bracketed)
        else:
            path += f".{part}" if path else part
        previous = part
    return path


_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field missing",
    "union_tag_invalid": "unknown type; expected one of flat, metered, time_and_materials, bonus_malus",
    "union_tag_not_found": "required field missing",
}


def first_validation_problem(error) -> tuple[str | None, str]:
    """(param, message) of the first problem of a pydantic ValidationError.

    A missing or unknown component `type` is reported on `...type` itself,
    where the client has to look."""
    return validation_problems(error)[0]


def validation_problems(error) -> list[tuple[str | None, str]]:
    """Every problem of a pydantic ValidationError as (param, message), in
    pydantic's order (a form shows each beside its own field)."""
    problems = []
    for found in error.errors(include_url=False):
        loc = tuple(found["loc"])
        if found["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = loc + ("type",)
        message = _MESSAGES.get(found["type"], found["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        problems.append((param_from_loc(loc) or None, message))
    return problems


def invalid_request_from_validation_error(error) -> InvalidRequest:
    """The first problem of a pydantic ValidationError, as a 400 naming its field."""
    param, message = first_validation_problem(error)
    return InvalidRequest(f"{param}: {message}" if param else message, param=param)
