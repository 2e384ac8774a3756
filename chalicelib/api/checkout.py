"""Checkout sessions and portal links, asked for by the merchant.

- `POST /checkout-sessions` -> the session with its `url` (`/checkout/{token}`)
- `GET /checkout-sessions/{session_id}`: `status` open / complete / expired,
  `customer_id` and `subscription_id` once made
- `POST /customers/{customer_id}/portal-session` `{"return_url"?}` -> `{"url", "expires_at"}`

The pages themselves are web/checkout_page.py and web/portal_pages.py.
"""
from __future__ import annotations

from typing import Annotated, Literal

from chalice import Blueprint
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from chalicelib.api.customers import NewCustomer
from chalicelib.api.fields import STRICT, Code, Currency, Locale
from chalicelib.api.http import Call, endpoint
from chalicelib.domain.self_service import MAX_URL_CHARS, is_return_url

blueprint = Blueprint(__name__)


def _url(value: str) -> str:
    if not is_return_url(value):
        raise ValueError(f"an absolute http(s) URL of at most {MAX_URL_CHARS} characters")
    return value


Url = Annotated[str, StringConstraints(min_length=1, max_length=MAX_URL_CHARS), AfterValidator(_url)]
ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class CheckoutCustomer(NewCustomer):
    """The new customer the checkout makes (the fields of `POST /customers`)."""

    reseller_id: None = Field(default=None, exclude=True)


class NewCheckoutSession(BaseModel):
    model_config = STRICT

    offer_id: ObjectId
    options: Annotated[list[Code], Field(max_length=20)] = []
    customer_id: ObjectId | None = None
    customer: CheckoutCustomer | None = None
    currency: Currency | None = None
    success_url: Url
    cancel_url: Url
    locale: Locale | None = None

    def fields(self) -> dict:
        fields = self.model_dump(exclude_none=True, exclude={"customer"})
        if self.customer is not None:
            fields["customer"] = self.customer.model_dump(exclude_none=True)
        return fields


class PortalSessionRequest(BaseModel):
    model_config = STRICT

    return_url: Url | None = None


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class CheckoutSession(_Answer):
    id: str
    object: Literal["checkout_session"]
    status: Literal["open", "complete", "expired"]
    url: str | None = Field(description="the page's address; only in the answer of the creation")
    offer_id: str
    options: list[str]
    currency: str
    locale: str | None
    customer_id: str | None = Field(description="the customer, once made (or the one the session named)")
    subscription_id: str | None = Field(description="the subscription, once made")
    success_url: str
    cancel_url: str
    created_at: str
    expires_at: str
    completed_at: str | None


class PortalSession(_Answer):
    id: str
    object: Literal["portal_session"]
    customer_id: str
    url: str
    return_url: str | None
    expires_at: str


@endpoint(blueprint, "/checkout-sessions", methods=("POST",), status=201, response="CheckoutSession")
def create_checkout_session(call: Call):
    from chalicelib.services import checkout

    return checkout.create_checkout_session(call.merchant_id, call.body(NewCheckoutSession).fields())


@endpoint(blueprint, "/checkout-sessions/{session_id}", response="CheckoutSession")
def get_checkout_session(call: Call, session_id: str):
    from chalicelib.services import checkout

    return checkout.get_checkout_session(call.merchant_id, session_id)


@endpoint(blueprint, "/customers/{customer_id}/portal-session", methods=("POST",), response="PortalSession")
def create_portal_session(call: Call, customer_id: str):
    from chalicelib.services import portal

    body = call.body(PortalSessionRequest)
    return portal.create_portal_session(call.merchant_id, customer_id, body.return_url)
