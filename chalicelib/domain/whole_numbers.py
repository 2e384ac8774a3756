"""Whole numbers in request bodies: counts (`interval_count`, `after_periods`,
`trial_days`...) and unit quantities (`package_size`, `up_to`,
`included_units`, a usage event's `quantity`).

The contract writes counts as JSON numbers (`"interval_count": 1`) and
quantities as decimal strings (`"included_units": "100"`); a client may send
either form of a whole number, as JSON integer or as decimal string. A JSON
float is never taken: `0.1` is already not 0.1 once parsed, which no amount
of money or usage may be."""
from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from chalicelib.domain.money import MAX_INTEGER_DIGITS

MAX_COUNT_DIGITS = 9
_COUNT_TEXT = re.compile(r"\d{1,%d}" % MAX_COUNT_DIGITS)


def count_field(minimum: int, maximum: int):
    """An int from `minimum` to `maximum`, sent as `3` or `"3"`."""

    def parse(value: Any) -> int:
        if isinstance(value, str) and _COUNT_TEXT.fullmatch(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise PydanticCustomError("whole_number", 'must be a whole number such as 3 (or "3")')
        if not minimum <= value <= maximum:
            raise PydanticCustomError("whole_number", f"must be from {minimum} to {maximum}")
        return value

    return Annotated[
        int,
        PlainValidator(parse, json_schema_input_type=int),
        WithJsonSchema({"anyOf": [{"type": "integer", "minimum": minimum, "maximum": maximum},
                                  {"type": "string", "pattern": r"^\d{1,%d}$" % MAX_COUNT_DIGITS}]}),
    ]


def _integer_as_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def with_integers(decimal_field, *, minimum: int = 0):
    """`decimal_field` (an Annotated Decimal that takes decimal strings, with
    its JSON schema) also taking a JSON integer: `100` as `"100"`."""
    string_schema = next(m.json_schema for m in reversed(decimal_field.__metadata__) if isinstance(m, WithJsonSchema))
    return Annotated[
        decimal_field,
        BeforeValidator(_integer_as_text),
        WithJsonSchema({"anyOf": [string_schema, {"type": "integer", "minimum": minimum,
                                                  "maximum": 10**MAX_INTEGER_DIGITS - 1}]}),
    ]
