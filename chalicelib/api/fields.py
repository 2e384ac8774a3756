"""Field types shared by the request models: strict, bounded, and named so
that a wrong value is a 400 naming the field."""
from __future__ import annotations

import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints

from chalicelib.domain.money import is_known_currency

# Every request model forbids unknown fields and does not coerce types:
# "12" is not an integer and 12 is not a string.
STRICT = ConfigDict(extra="forbid", strict=True)

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ShortText = Annotated[str, StringConstraints(max_length=500)]
Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
Locale = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")]
Percent = Annotated[str, StringConstraints(pattern=r"^(100(\.0{1,4})?|\d{1,2}(\.\d{1,4})?)$")]

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[A-Za-z]{2,}$")


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("not an e-mail address")
    return value


def _currency(value: str) -> str:
    if not is_known_currency(value):
        raise ValueError("not an ISO 4217 currency code")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not an IANA time zone (e.g. Europe/Paris)") from None
    return value


Email = Annotated[str, StringConstraints(max_length=320), AfterValidator(_email)]
# Cognito's own policy decides what a good password is; this only bounds it.
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(_currency)]
TimeZone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_timezone)]
# Stripe's limits: 50 keys of 1 to 40 characters, values up to 500 (an
# empty key is also what DynamoDB refuses as a map key).
Metadata = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=40)],
         Annotated[str, StringConstraints(max_length=500)]],
    Field(max_length=50),
]
