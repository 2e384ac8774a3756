"""localstripe on loopback, in memory.

localstripe pickles its whole store to one fixed file in /tmp on every write:
slow once it holds thousands of objects, and shared by every instance on the
machine. The local stage starts from scratch every time anyway, so the store
stays in memory, and the server listens on 127.0.0.1 only.

Stripe's idempotency, which localstripe lacks, is added: a POST with an
`Idempotency-Key` gets the first answer to that key again (for the same
API key), a different request under the same key a 400, and a request made
while the first is still being answered a 409, as Stripe does. Without it a
charge the stripe library sends again after a timeout (same key) would be
made twice here where Stripe makes it once.

One filter of Stripe's API that localstripe lacks is added:
`GET /v1/payment_intents?customer=` (Stripe's way to list a customer's
PaymentIntents; localstripe refuses any filter on that list). The billing
code uses it to find an invoice's charge after a crash, and listing every
PaymentIntent of the account instead would not scale on Stripe.
"""
import argparse
import hashlib

from aiohttp import web
from localstripe import resources, server

_IN_PROGRESS = object()
_answers: dict[tuple[str, str], object] = {}


@web.middleware
async def idempotency_middleware(request, handler):
    key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
    if not key:
        return await handler(request)
    slot = (request.headers.get("Authorization", ""), key)
    fingerprint = hashlib.sha256(request.path.encode() + b"\0" + await request.read()).hexdigest()
    kept = _answers.get(slot)
    if kept is _IN_PROGRESS:
        return _stripe_error(409, "There is currently another in-progress request using this Idempotent Key")
    if kept is not None:
        if kept[0] != fingerprint:
            return _stripe_error(400, "Keys for idempotent requests can only be used with the same parameters")
        _, status, body, content_type = kept
        return web.Response(status=status, body=body, content_type=content_type,
                            headers={"Idempotent-Replayed": "true"})
    _answers[slot] = _IN_PROGRESS
    try:
        response = await handler(request)
    except BaseException:
        del _answers[slot]
        raise
    _answers[slot] = (fingerprint, response.status, response.body, response.content_type)
    return response


def _stripe_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"type": "idempotency_error", "message": message}}, status=status)


def _list_payment_intents(cls, url, customer=None, limit=None, starting_after=None, **kwargs):
    listing = resources.StripeObject._api_list_all.__func__(
        cls, url, limit=limit, starting_after=starting_after, **kwargs
    )
    if customer is not None:
        listing._list = [intent for intent in listing._list if intent.customer == customer]
    # Stripe lists newest first.
    listing._list.reverse()
    return listing


def _update_payment_method(cls, id, card=None, **data):
    """Stripe updates a card's `exp_month`/`exp_year` in place (what the
    card updater does); localstripe would replace the whole card with them."""
    method = resources.StripeObject._api_update.__func__(cls, id, **data)
    if card:
        for name in ("exp_month", "exp_year"):
            if name in card:
                method.card[name] = int(card[name])
    return method


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420)
    args = parser.parse_args()
    resources.Store.dump_to_disk = lambda self: None
    resources.PaymentIntent._api_list_all = classmethod(_list_payment_intents)
    resources.PaymentMethod._api_update = classmethod(_update_payment_method)
    server.app.middlewares.insert(0, idempotency_middleware)
    web.run_app(server.app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
