"""POST /usage (usage from sources that are not devices) and
GET /subscriptions/{subscription_id}/usage (a period's usage per meter)."""
from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from chalice import Blueprint
from pydantic import BaseModel, Field, PlainValidator, StringConstraints, WithJsonSchema
from pydantic_core import PydanticCustomError

from chalicelib.api.fields import STRICT
from chalicelib.api.http import Call, endpoint
from chalicelib.domain.catalog import Code, Instant
from chalicelib.domain.money import MAX_DECIMAL_TEXT, MAX_INTEGER_DIGITS, MAX_UNIT_DECIMALS, decimal_from_text
from chalicelib.domain.whole_numbers import with_integers
from chalicelib.services import usage

blueprint = Blueprint(__name__)

# The merchant's own id of an event (unique per merchant forever): printable
# ASCII, no spaces.
EventId = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,255}$")]
ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


def _quantity(value: Any) -> Decimal:
    # Signed: a correction carries the signed difference; the service refuses
    # a negative quantity on any other event, naming it.
    try:
        return decimal_from_text(value, max_decimals=MAX_UNIT_DECIMALS, allow_negative=True)
    except ValueError as error:
        raise PydanticCustomError("decimal_string", str(error)) from None


# A decimal string, or a JSON integer (domain/whole_numbers.py).
Quantity = with_integers(Annotated[
    Decimal,
    PlainValidator(_quantity, json_schema_input_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^-?\d+(\.\d{1,12})?$", "maxLength": MAX_DECIMAL_TEXT,
                    "examples": ["7.5"]}),
], minimum=-(10**MAX_INTEGER_DIGITS - 1))


class UsageEventBody(BaseModel):
    model_config = STRICT

    event_id: EventId
    subscription_id: ObjectId
    meter: Code
    quantity: Quantity
    # Absent: the time the request is received (as Stripe's and Lago's events).
    timestamp: Instant | None = None
    corrects: EventId | None = None


class UsageBody(BaseModel):
    model_config = STRICT

    events: Annotated[list[UsageEventBody], Field(min_length=1, max_length=usage.MAX_EVENTS)]


@endpoint(blueprint, "/usage", methods=("POST",), response="UsageRecorded")
def record_usage(call: Call):
    body = call.body(UsageBody)
    events = [usage.EventInput(**event.model_dump()) for event in body.events]
    return usage.record_events(call.merchant_id, events)


@endpoint(blueprint, "/subscriptions/{subscription_id}/usage", response="SubscriptionUsage")
def subscription_usage(call: Call, subscription_id: str):
    return usage.subscription_usage(call.merchant_id, subscription_id, call.query("period_start"))
