"""/offers: the merchant's catalog. The request models are the catalog's own
(chalicelib/domain/catalog.py): strict, amounts as decimal strings.

The service (and through it the catalog's pydantic models) is imported by
the views, so a cold start that serves other routes does not pay for it."""
from __future__ import annotations

from chalice import Blueprint

from chalicelib.api.http import Call, endpoint, listing

blueprint = Blueprint(__name__)


@endpoint(blueprint, "/offers", methods=("POST",), status=201, response="OfferObject")
def create_offer(call: Call):
    from chalicelib.domain.catalog import Offer
    from chalicelib.services import offers

    return offers.create_offer(call.merchant_id, call.body(Offer))


@endpoint(blueprint, "/offers", response="OfferList")
def list_offers(call: Call):
    from chalicelib.services import offers

    return listing(*offers.list_offers(call.merchant_id, limit=call.limit(), cursor=call.query("cursor")))


@endpoint(blueprint, "/offers/{offer_id}", response="OfferObject")
def get_offer(call: Call, offer_id: str):
    from chalicelib.services import offers

    return offers.get_offer(call.merchant_id, offer_id)


@endpoint(blueprint, "/offers/{offer_id}/archive", methods=("POST",), response="OfferObject")
def archive_offer(call: Call, offer_id: str):
    from chalicelib.services import offers

    return offers.archive_offer(call.merchant_id, offer_id)


@endpoint(blueprint, "/offers/{offer_id}/versions", methods=("POST",), status=201, response="OfferObject")
def add_version(call: Call, offer_id: str):
    from chalicelib.domain.catalog import OfferVersion
    from chalicelib.services import offers

    return offers.add_version(call.merchant_id, offer_id, call.body(OfferVersion))


@endpoint(blueprint, "/offers/{offer_id}/price-changes", methods=("POST",), status=201, response="PriceChange")
def schedule_price_change(call: Call, offer_id: str):
    from chalicelib.domain.catalog import PriceChange
    from chalicelib.services import price_changes

    body = call.body(PriceChange)
    version = {name: getattr(body.version, name) for name in body.version.model_fields_set}
    return price_changes.schedule_price_change(call.merchant_id, offer_id, {
        "version": version, "effective_at": body.effective_at, "existing": body.existing,
        "notice_days": body.notice_days})


@endpoint(blueprint, "/offers/{offer_id}/price-changes", response="PriceChangeList")
def list_price_changes(call: Call, offer_id: str):
    from chalicelib.services import price_changes

    return listing(price_changes.list_price_changes(call.merchant_id, offer_id), None)


@endpoint(blueprint, "/offers/{offer_id}/price-changes/{price_change_id}/cancel", methods=("POST",),
          response="PriceChange")
def cancel_price_change(call: Call, offer_id: str, price_change_id: str):
    from chalicelib.services import price_changes

    return price_changes.cancel_price_change(call.merchant_id, offer_id, price_change_id)
