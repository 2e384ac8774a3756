"""/subscriptions: subscribe, read, list, change, cancel, reactivate, pause,
resume, history, upcoming invoice; and the operator's forced cancellation
(`/admin/merchants/{merchant_id}/subscriptions/{subscription_id}/cancel`)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from chalice import Blueprint
from pydantic import BaseModel, Field, StringConstraints

from chalicelib.actor import current_actor
from chalicelib.api.fields import STRICT, Code, ShortText
from chalicelib.api.http import Call, endpoint, listing
from chalicelib.domain.catalog import Instant
from chalicelib.domain.whole_numbers import count_field
from chalicelib.services import resellers, subscriptions

blueprint = Blueprint(__name__)

ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Options = Annotated[list[Code], Field(max_length=20)]
# Keyed by component or option code; the values are checked by the catalog's
# models once merged into the component or option
# (price_overrides.apply_price_overrides); the names are bounded here.
PriceOverrides = Annotated[dict[Code, Annotated[dict[Code, Any], Field(max_length=20)]], Field(max_length=50)]

def merchant_actor(call: Call) -> str:
    """Who the history names for a change: the request's actor, as the
    audit trail does (`key:<prefix>` for an API key, `user:<email>` from
    the console)."""
    return current_actor()


class PhaseBody(BaseModel):
    model_config = STRICT

    after_periods: count_field(1, 1200)
    offer_id: ObjectId
    options: Options | None = None
    price_overrides: PriceOverrides | None = None


class NewSubscription(BaseModel):
    model_config = STRICT

    customer_id: ObjectId
    offer_id: ObjectId
    options: Options = []
    price_overrides: PriceOverrides | None = None
    start_at: Instant | None = None
    trial_days: count_field(0, 730) | None = None
    phases: Annotated[list[PhaseBody], Field(max_length=20)] = []


class SubscriptionChange(BaseModel):
    model_config = STRICT

    offer_id: ObjectId | None = None
    options: Options | None = None
    price_overrides: PriceOverrides | None = None
    effective: Literal["immediately", "period_end"]
    reason: ShortText | None = None

    def changes(self) -> dict:
        changes = self.model_dump(exclude_unset=True, exclude={"reason"})
        if changes.get("offer_id", "") is None:
            changes.pop("offer_id")
        if changes.get("options", []) is None:
            changes["options"] = []
        return changes


class Cancellation(BaseModel):
    model_config = STRICT

    at_period_end: bool = True
    reason: ShortText | None = None


class OperatorCancellation(Cancellation):
    force: bool = False


class Empty(BaseModel):
    model_config = STRICT


@endpoint(blueprint, "/subscriptions", methods=("POST",), status=201, response="Subscription", resellers=True)
def create_subscription(call: Call):
    body = call.body(NewSubscription)
    resellers.require_customer(call.merchant_id, body.customer_id, call.reseller_id)
    fields = body.model_dump()
    fields["phases"] = [phase.model_dump(exclude_none=True) for phase in body.phases]
    return subscriptions.create_subscription(call.merchant_id, fields, merchant_actor(call))


@endpoint(blueprint, "/subscriptions", response="SubscriptionList", resellers=True)
def list_subscriptions(call: Call):
    resellers.list_subscriptions_customer(call.query("customer_id"), call.merchant_id, call.reseller_id)
    items, next_cursor = subscriptions.list_subscriptions(
        call.merchant_id,
        customer_id=call.query("customer_id"),
        status=call.query("status"),
        limit=call.limit(),
        cursor=call.query("cursor"),
    )
    return listing(items, next_cursor)


@endpoint(blueprint, "/subscriptions/{subscription_id}", response="Subscription", resellers=True)
def get_subscription(call: Call, subscription_id: str):
    return resellers.require_subscription(
        call.merchant_id, subscriptions.get_subscription(call.merchant_id, subscription_id), call.reseller_id)


@endpoint(blueprint, "/subscriptions/{subscription_id}/change", methods=("POST",), response="Subscription")
def change_subscription(call: Call, subscription_id: str):
    body = call.body(SubscriptionChange)
    return subscriptions.change_subscription(call.merchant_id, subscription_id, body.changes(), merchant_actor(call),
                                             reason=body.reason)


@endpoint(blueprint, "/subscriptions/{subscription_id}/cancel", methods=("POST",), response="Subscription")
def cancel_subscription(call: Call, subscription_id: str):
    body = call.body(Cancellation)
    return subscriptions.cancel_subscription(
        call.merchant_id, subscription_id, at_period_end=body.at_period_end, reason=body.reason,
        actor=merchant_actor(call),
    )


@endpoint(blueprint, "/subscriptions/{subscription_id}/reactivate", methods=("POST",), response="Subscription")
def reactivate_subscription(call: Call, subscription_id: str):
    call.body(Empty)
    return subscriptions.reactivate_subscription(call.merchant_id, subscription_id, merchant_actor(call))


@endpoint(blueprint, "/subscriptions/{subscription_id}/pause", methods=("POST",), response="Subscription")
def pause_subscription(call: Call, subscription_id: str):
    call.body(Empty)
    return subscriptions.pause_subscription(call.merchant_id, subscription_id, merchant_actor(call))


@endpoint(blueprint, "/subscriptions/{subscription_id}/resume", methods=("POST",), response="Subscription")
def resume_subscription(call: Call, subscription_id: str):
    call.body(Empty)
    return subscriptions.resume_subscription(call.merchant_id, subscription_id, merchant_actor(call))


@endpoint(blueprint, "/subscriptions/{subscription_id}/history", response="HistoryList")
def subscription_history(call: Call, subscription_id: str):
    items, next_cursor = subscriptions.subscription_history(
        call.merchant_id, subscription_id, limit=call.limit(), cursor=call.query("cursor")
    )
    return listing(items, next_cursor)


@endpoint(blueprint, "/subscriptions/{subscription_id}/upcoming-invoice", response="UpcomingInvoice")
def upcoming_invoice(call: Call, subscription_id: str):
    return subscriptions.upcoming_invoice(call.merchant_id, subscription_id)


@endpoint(
    blueprint, "/admin/merchants/{merchant_id}/subscriptions/{subscription_id}/cancel", methods=("POST",),
    auth="operator", response="Subscription",
)
def operator_cancel_subscription(call: Call, merchant_id: str, subscription_id: str):
    body = call.body(OperatorCancellation)
    return subscriptions.cancel_subscription(
        merchant_id, subscription_id, at_period_end=body.at_period_end, reason=body.reason, force=body.force,
        actor="operator",
    )
