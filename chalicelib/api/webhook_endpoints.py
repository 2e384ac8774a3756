"""/webhook-endpoints: where a merchant's domain events are POSTed, signed,
and what became of each delivery (API.md, "Revenue recognition, webhooks
and accounting"; docs/api.md, "Webhook endpoints")."""
from __future__ import annotations

from typing import Annotated, Literal

from chalice import Blueprint
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from chalicelib.api.fields import STRICT
from chalicelib.api.http import Call, endpoint, listing
from chalicelib.services import webhooks

blueprint = Blueprint(__name__)

EventType = Annotated[str, StringConstraints(pattern=r"^(\*|[a-z][a-z_]*(\.[a-z][a-z_]*)+)$", max_length=100)]


class NewWebhookEndpoint(BaseModel):
    model_config = STRICT

    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)] = Field(
        description="the receiver's URL: HTTPS to a public host (plain HTTP to 127.0.0.1 on the local stage only)")
    events: Annotated[list[EventType], Field(min_length=1, max_length=100)] = Field(
        description='the event types to deliver (docs/events.md), or ["*"] for every one')
    description: Annotated[str, StringConstraints(max_length=500)] | None = None


@endpoint(blueprint, "/webhook-endpoints", methods=("POST",), status=201, response="WebhookEndpointWithSecret")
def create_webhook_endpoint(call: Call):
    body = call.body(NewWebhookEndpoint)
    return webhooks.create_endpoint(call.merchant_id, body.url, body.events, body.description)


@endpoint(blueprint, "/webhook-endpoints", response="WebhookEndpointList")
def list_webhook_endpoints(call: Call):
    items, next_cursor = webhooks.list_endpoints(call.merchant_id, limit=call.limit(), cursor=call.query("cursor"))
    return listing(items, next_cursor)


@endpoint(blueprint, "/webhook-endpoints/{endpoint_id}", response="WebhookEndpoint")
def get_webhook_endpoint(call: Call, endpoint_id: str):
    return webhooks.get_endpoint(call.merchant_id, endpoint_id)


@endpoint(blueprint, "/webhook-endpoints/{endpoint_id}", methods=("DELETE",), response="DeletedWebhookEndpoint")
def delete_webhook_endpoint(call: Call, endpoint_id: str):
    return webhooks.delete_endpoint(call.merchant_id, endpoint_id)


@endpoint(blueprint, "/webhook-endpoints/{endpoint_id}/deliveries", response="WebhookDeliveryList")
def list_webhook_deliveries(call: Call, endpoint_id: str):
    items, next_cursor = webhooks.list_deliveries(call.merchant_id, endpoint_id, limit=call.limit(),
                                                  cursor=call.query("cursor"))
    return listing(items, next_cursor)


@endpoint(blueprint, "/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry", methods=("POST",),
          response="WebhookDelivery")
def retry_webhook_delivery(call: Call, endpoint_id: str, delivery_id: str):
    return webhooks.retry_delivery(call.merchant_id, endpoint_id, delivery_id)


# -- the answers, for the OpenAPI document ------------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class WebhookEndpoint(_Answer):
    object: Literal["webhook_endpoint"]
    id: str = Field(examples=["we_01jdf7k3m4n5p6q7r8s9t0v1w2"])
    url: str
    events: list[str]
    description: str | None
    status: Literal["enabled"]
    created_at: str


class WebhookEndpointWithSecret(WebhookEndpoint):
    secret: str = Field(description="the signing secret (`whsec_...`), shown only in this answer")


class DeletedWebhookEndpoint(_Answer):
    object: Literal["webhook_endpoint"]
    id: str
    deleted: bool


class WebhookAttempt(_Answer):
    at: str
    status_code: int | None = Field(description="the receiver's HTTP status; null when it did not answer")
    error: str | None = Field(description="why there was no answer (`timeout`, `connection_refused`, ...)")
    duration_ms: int
    manual: bool = Field(description="made by POST .../retry")


class WebhookDelivery(_Answer):
    object: Literal["webhook_delivery"]
    id: str = Field(examples=["whd_3k2j5h7g9f1d3s5a7p9o1i3u5y"])
    endpoint_id: str
    event_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    created_at: str
    next_attempt_at: str | None
    attempts: list[WebhookAttempt] = Field(description="oldest first")


class _List(_Answer):
    has_more: bool
    next_cursor: str | None


class WebhookEndpointList(_List):
    data: list[WebhookEndpoint]


class WebhookDeliveryList(_List):
    data: list[WebhookDelivery]
