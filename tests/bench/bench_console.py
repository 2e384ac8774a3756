"""The console's pages at a shop's size: a merchant with BENCH_CONSOLE_CUSTOMERS
customers (2,000 in `make bench`), some of them billed every month for
BENCH_CONSOLE_MONTHS months (24), and a member of staff signed in.

Each page is asked for as API Gateway hands it to the function (the
session cookie in the headers) and measured as the API's routes are
(tests/bench/bench_api.py): our CPU per page (the handler's CPU less
moto's), and the DynamoDB requests each page makes, which must not grow
with the number of customers (no scan).

Run: `python -m tests.bench.bench_console` (part of `make bench`).
"""
from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timedelta, timezone

from tests.bench.harness import use_bench_environment

use_bench_environment()

CUSTOMERS = int(os.environ.get("BENCH_CONSOLE_CUSTOMERS", "2000"))
MONTHS = int(os.environ.get("BENCH_CONSOLE_MONTHS", "24"))
BILLED_CUSTOMERS = int(os.environ.get("BENCH_CONSOLE_BILLED", "20"))
REQUESTS = int(os.environ.get("BENCH_CONSOLE_REQUESTS", "30"))
START = datetime(2024, 12, 1, tzinfo=timezone.utc)
OWNER = ("gerant@optique-durand.fr", "Gerant-pass-2026")
SURNAMES = ["Dupont", "Martin", "Bernard", "Durand", "Lefèvre", "Moreau", "Laurent", "Simon", "Michel", "Garcia"]
OFFER = {"code": "entretien", "name": "Contrat d'entretien", "currency": "EUR", "billing_interval": "month",
         "components": [{"code": "base", "type": "flat", "amount": "29.00"}],
         "options": [{"code": "express", "name": "Intervention 4 h", "amount": "10.00"}]}


def page_event(path: str, resource: str, path_parameters: dict | None, cookie: str, query: dict | None = None) -> dict:
    from tests.bench.bench_api import api_event

    event = api_event("GET", path, resource, path_parameters, "none", query=query)
    headers = {"Cookie": f"console_session={cookie}", "Accept-Language": "fr",
               "Host": event["headers"]["Host"], "Accept": "text/html"}
    event["headers"] = headers
    event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    return event


def setup():
    from chalicelib.clock import FixedClock, use_clock
    from chalicelib.domain.catalog import parse_offer
    from chalicelib.services import collecting, customers, issuing, merchants, offers, staff, subscriptions
    from chalicelib.store import customers as customer_store
    from tests.bench.bench_billing import CountingGateway

    clock = FixedClock(START)
    use_clock(clock)
    collecting.use_gateway(CountingGateway())
    merchant = merchants.create_merchant({"name": "Optique Durand", "default_currency": "EUR",
                                          "invoice_prefix": "OD", "tax_rates": {"FR": "20.0"},
                                          "timezone": "Europe/Paris", "locale": "fr"}, owner=OWNER)
    merchant_id = merchant["id"]
    offer_id = offers.create_offer(merchant_id, parse_offer(OFFER))["id"]
    card = {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030, "payment_method_id": "pm_bench"}
    ids, billed = [], []
    for n in range(CUSTOMERS):
        name = f"{['Jean', 'Marie', 'Luc', 'Anne'][n % 4]} {SURNAMES[n % len(SURNAMES)]} {n}"
        customer = customers.create_customer(merchant_id, {"name": name, "email": f"client{n}@example.fr",
                                                           "country": "FR", "external_id": f"EXT-{n:05d}"})
        ids.append(customer["id"])
        if n < BILLED_CUSTOMERS:
            customer_store.set_default_card(merchant_id, customer["id"], card)
            customer_store.set_stripe_customer_id(merchant_id, customer["id"], f"cus_bench{n}")
            sub = subscriptions.create_subscription(merchant_id, {"customer_id": customer["id"], "offer_id": offer_id,
                                                                  "options": ["express"], "start_at": START}, "bench")
            billed.append((customer["id"], sub["id"]))
    for month in range(1, MONTHS + 1):
        clock.set(START + timedelta(days=31 * month))
        for _, sub_id in billed:
            issuing.bill_subscription(merchant_id, sub_id)
    collecting.use_gateway(None)
    cookie, _ = staff.sign_in(*OWNER)
    return cookie, ids, billed


def pages(cookie: str, ids: list[str], billed: list[tuple[str, str]]) -> dict:
    return {
        "GET /console (dashboard)": lambda i: page_event("/console", "/console", None, cookie),
        "GET /console/customers": lambda i: page_event("/console/customers", "/console/customers", None, cookie),
        "GET /console/customers?q=dup": lambda i: page_event("/console/customers", "/console/customers", None, cookie,
                                                             {"q": "dup"}),
        "GET /console/customers/{id} (24 months billed)": lambda i: page_event(
            f"/console/customers/{billed[i % len(billed)][0]}", "/console/customers/{customer_id}",
            {"customer_id": billed[i % len(billed)][0]}, cookie),
    }


def main() -> dict:
    from tests.bench.bench_api import measure_routes

    (_, _, billed), results = measure_routes(setup, pages, REQUESTS)
    summary = {"benchmark": "console", "customers": CUSTOMERS, "months": MONTHS, "billed_customers": len(billed),
               "pages": results, "python": sys.version.split()[0]}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
