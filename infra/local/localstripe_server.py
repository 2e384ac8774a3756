"""localstripe on loopback, in memory.

localstripe pickles its whole store to one fixed file in /tmp on every write:
slow once it holds thousands of objects, and shared by every instance on the
machine. The local stage starts from scratch every time anyway, so the store
stays in memory, and the server listens on 127.0.0.1 only.

One filter of Stripe's API that localstripe lacks is added:
`GET /v1/payment_intents?customer=` (Stripe's way to list a customer's
PaymentIntents; localstripe refuses any filter on that list). The billing
code uses it to find an invoice's charge after a crash, and listing every
PaymentIntent of the account instead would not scale on Stripe.
"""
import argparse

from aiohttp import web
from localstripe import resources, server


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
    web.run_app(server.app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
