"""Selling worldwide on moto and localstripe: one offer with prices in USD,
JPY and KWD beside its EUR ones, customers billed in each (their `currency`
or the merchant's price list for their country), the PaymentIntents at
localstripe in that currency's Stripe amount; a report's total at the
merchant's rates; price changes migrated at the boundary with the customers'
notice, or grandfathered."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from chalicelib import jobs
from tests.integration.test_alerts import drain, mails_to
from tests.integration.test_billing import (  # noqa: F401  (clock_start: a fixture)
    DEC_1,
    NOV_1,
    bill,
    charges_of,
    clock_start,
    invoices_of,
    iso,
    new_customer,
    new_offer,
    record_usage,
    subscribe,
)

WORLD = {
    "code": "neksia-world", "name": "Neksia World", "currency": "EUR", "billing_interval": "month",
    "components": [{"code": "base", "type": "flat", "amount": "49.00"},
                   {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.20"}],
    "options": [{"code": "express", "name": "4h on-site", "amount": "30.00"}],
    "currency_options": {
        "USD": {"components": [{"code": "base", "type": "flat", "amount": "52.00"},
                               {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "1.30"}],
                "options": [{"code": "express", "name": "4h on-site", "amount": "32.00"}]},
        "JPY": {"components": [{"code": "base", "type": "flat", "amount": "7600"},
                               {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "190.5"}],
                "options": [{"code": "express", "name": "4h on-site", "amount": "4700"}]},
        "KWD": {"components": [{"code": "base", "type": "flat", "amount": "16.250"},
                               {"code": "montage", "type": "metered", "meter": "montages", "unit_amount": "0.385"}],
                "options": [{"code": "express", "name": "4h on-site", "amount": "9.900"}]},
    },
}


def world_merchant(new_merchant):
    return new_merchant(price_lists={"JP": "JPY", "US": "USD"})


def test_jpy_kwd_and_usd_customers_of_one_offer_are_billed_and_charged_in_their_currency(new_merchant, clock):
    api = world_merchant(new_merchant)
    offer_id = new_offer(api, WORLD)
    shown = api.get(f"/offers/{offer_id}").json
    assert shown["currency_options"]["KWD"]["components"][0]["amount"] == "16.250"

    # Japan by the merchant's price list; Kuwait and the US by the customers' own currency.
    japan = new_customer(api, name="Tokyo Optics", email="ap@tokyo-optics.jp", country="JP")
    kuwait = new_customer(api, name="Gulf Vision", email="ap@gulf-vision.kw", country="KW", currency="KWD")
    america = new_customer(api, name="Austin Eyes", email="ap@austin-eyes.us", country="US", currency="USD")
    subs = {code: subscribe(api, customer, offer_id, start_at=iso(NOV_1))
            for code, customer in (("JPY", japan), ("KWD", kuwait), ("USD", america))}
    assert {code: s["currency"] for code, s in subs.items()} == {"JPY": "JPY", "KWD": "KWD", "USD": "USD"}

    # The first invoices: the first period's fees, in advance, in each currency (no tax for these countries).
    first = {code: invoices_of(api, s["id"])[0] for code, s in subs.items()}
    assert {c: (i["currency"], i["total"], i["status"]) for c, i in first.items()} == {
        "JPY": ("JPY", "7600", "paid"), "KWD": ("KWD", "16.250", "paid"), "USD": ("USD", "52.00", "paid")}
    expected = {"JPY": (7600, "jpy"), "KWD": (16250, "kwd"), "USD": (5200, "usd")}
    for code, customer in (("JPY", japan), ("KWD", kuwait), ("USD", america)):
        [charge] = charges_of(api, customer)
        assert (charge["amount"], charge["currency"]) == expected[code], code

    # November's usage at the boundary: 3 montages. JPY 571.5 -> 572 (no decimals);
    # KWD 1.155 -> 1.160 (three decimals, a multiple of 0.010 for Stripe); USD 3.90.
    clock.set(NOV_1 + timedelta(days=4))
    for s in subs.values():
        record_usage(api, s["id"], NOV_1 + timedelta(days=3), montages="3")
    clock.set(DEC_1 + timedelta(hours=1))
    for s in subs.values():
        bill(api, s["id"])
    december = {code: invoices_of(api, s["id"])[1] for code, s in subs.items()}
    usage = {code: next(line["amount"] for line in i["lines"] if line["kind"] == "usage")
             for code, i in december.items()}
    assert usage == {"JPY": "572", "KWD": "1.160", "USD": "3.90"}
    assert {c: i["total"] for c, i in december.items()} == {"JPY": "8172", "KWD": "17.410", "USD": "55.90"}
    for code, customer in (("JPY", japan), ("KWD", kuwait), ("USD", america)):
        latest = max(charges_of(api, customer), key=lambda c: c["created"])
        minor = {"JPY": 8172, "KWD": 17410, "USD": 5590}[code]
        assert (latest["amount"], latest["currency"]) == (minor, code.lower())
        assert latest["amount"] % (10 if code == "KWD" else 1) == 0

    # The PDF is in the customer's currency too.
    pdf = api.get(f"/invoices/{december['KWD']['id']}/pdf", headers={"Accept": "application/pdf"})
    assert pdf.status == 200


def test_currency_options_are_checked_like_the_main_terms(merchant):
    bad_yen = {**WORLD, "currency_options": {**WORLD["currency_options"], "JPY": {
        **WORLD["currency_options"]["JPY"],
        "components": [{"code": "base", "type": "flat", "amount": "7600.50"},
                       WORLD["currency_options"]["JPY"]["components"][1]]}}}
    response = merchant.post("/offers", bad_yen)
    assert response.status == 400, response
    assert response.json["error"]["param"] == "currency_options.JPY.components[0].amount"

    other_code = {**WORLD, "currency_options": {"USD": {**WORLD["currency_options"]["USD"], "options": [
        {"code": "night", "name": "Night", "amount": "1.00"}]}}}
    response = merchant.post("/offers", other_code)
    assert response.status == 400
    assert response.json["error"]["param"] == "currency_options.USD.options[0].code"

    kwd_fils = {**WORLD, "code": "k", "currency_options": {"KWD": {**WORLD["currency_options"]["KWD"], "options": [
        {"code": "express", "name": "4h on-site", "amount": "9.905"}]}}}
    response = merchant.post("/offers", kwd_fils)
    assert response.status == 400
    assert response.json["error"]["param"] == "currency_options.KWD.options[0].amount"

    response = merchant.post("/offers", {**WORLD, "currency_options": {"XAU": WORLD["currency_options"]["USD"]}})
    assert response.status == 400


def test_a_customer_in_a_currency_the_offer_has_no_prices_in_is_refused(merchant, clock):
    offer_id = new_offer(merchant, {**WORLD, "currency_options": {}})
    customer = new_customer(merchant, currency="CHF", card=None)
    response = merchant.post("/subscriptions", {"customer_id": customer, "offer_id": offer_id})
    assert response.status == 400
    assert response.json["error"]["param"] == "offer_id"
    # A price list naming a currency the offer lacks falls back on the offer's own.
    response = merchant.patch("/merchant", {"price_lists": {"FR": "USD"}})
    assert response.status == 200 and response.json["price_lists"] == {"FR": "USD"}
    plain = new_customer(merchant, card=None)
    assert subscribe(merchant, plain, offer_id)["currency"] == "EUR"


def test_a_customers_currency_is_changed_and_cleared_with_patch(merchant):
    customer = new_customer(merchant, card=None)
    changed = merchant.patch(f"/customers/{customer}", {"currency": "USD"})
    assert changed.status == 200 and changed.json["currency"] == "USD"
    cleared = merchant.patch(f"/customers/{customer}", {"currency": None})
    assert cleared.status == 200 and "currency" not in cleared.json
    refused = merchant.patch(f"/customers/{customer}", {"currency": "usd"})
    assert refused.status == 400 and refused.json["error"]["param"] == "currency"


def test_fx_rates_are_dated_and_the_report_total_never_mixes_a_currency_without_one(merchant, clock):
    from chalicelib.services import reports

    response = merchant.patch("/merchant", {"fx_rates": {"USD": "0.92", "JPY": "0.0062"}})
    assert response.status == 200, response
    assert response.json["fx_rates"] == {"JPY": "0.0062", "USD": "0.92"}
    set_at = response.json["fx_rates_set_at"]["USD"]
    assert set_at == iso(NOV_1)
    clock.set(NOV_1 + timedelta(days=2))
    response = merchant.patch("/merchant", {"fx_rates": {"USD": "0.92", "JPY": "0.0061"}})
    assert response.json["fx_rates_set_at"] == {"USD": set_at, "JPY": iso(NOV_1 + timedelta(days=2))}
    assert merchant.patch("/merchant", {"fx_rates": {"EUR": "1"}}).json["error"]["param"] == "fx_rates.EUR"
    assert merchant.patch("/merchant", {"fx_rates": {"USD": "0"}}).status == 400
    assert merchant.patch("/merchant", {"fx_rates": {"USD": 0.92}}).status == 400

    figures = {"mrr": "10.00", "mrr_recurring": "10.00", "mrr_usage": "0.00", "arr": "120.00", "invoiced": "5.00",
               "collected": "5.00", "outstanding": "0.00", "usage_charges": "0.00"}
    report = {"object": "report", "month": "2026-11", "currencies": {
        "EUR": figures, "USD": figures, "KWD": {**figures, "mrr": "3.000"}}}
    total = reports.with_converted_total(merchant.merchant["id"], report)["total"]
    assert total["mrr"] == "19.20"  # 10 + 10 x 0.92; the KWD left out, and said so
    assert total["not_converted"] == ["KWD"] and total["converted"] == ["USD"]
    assert total["rates"]["USD"] == {"rate": "0.92", "set_at": set_at}
    # A merchant billing in its own currency only gets no total (its report is unchanged).
    alone = reports.with_converted_total(merchant.merchant["id"], {"currencies": {"EUR": figures}})
    assert "total" not in alone


# ---------------------------------------------------------------------------
# Price changes


def simple(code: str, base: str = "49.00") -> dict:
    return {"code": code, "name": f"Offer {code}", "currency": "EUR", "billing_interval": "month",
            "components": [{"code": "base", "type": "flat", "amount": base}]}


def new_prices(base: str) -> dict:
    return {"components": [{"code": "base", "type": "flat", "amount": base}]}


def run_scheduler(clock, at):
    clock.set(at)
    result = jobs.billing_scheduler(at, inline=True)
    drain()
    return result


def test_a_migrated_price_change_moves_at_the_boundary_after_its_notice_and_a_grandfathered_one_does_not(
        merchant, clock):
    migrating = new_offer(merchant, simple("migrating"))
    keeping = new_offer(merchant, simple("keeping"))
    moved = new_customer(merchant, name="Labo Martin", email="compta@labo-martin.fr")
    kept = new_customer(merchant, name="Optic Sud", email="compta@optic-sud.fr")
    moved_sub = subscribe(merchant, moved, migrating, start_at=iso(NOV_1))
    kept_sub = subscribe(merchant, kept, keeping, start_at=iso(NOV_1))

    effective = NOV_1 + timedelta(days=20)
    response = merchant.post(f"/offers/{migrating}/price-changes", {
        "version": new_prices("59.00"), "effective_at": iso(effective), "existing": "migrate", "notice_days": 10})
    assert response.status == 201, response
    change = response.json
    assert (change["status"], change["version"], change["notice_at"]) == ("scheduled", 2, iso(effective - timedelta(days=10)))
    response = merchant.post(f"/offers/{keeping}/price-changes", {
        "version": new_prices("59.00"), "effective_at": iso(effective), "existing": "grandfather"})
    assert response.status == 201, response
    assert response.json["notice_days"] == 30

    # Not yet: nothing is sent before its notice time.
    run_scheduler(clock, NOV_1 + timedelta(days=5))
    assert mails_to("compta@labo-martin.fr") == []
    # The notice time came: the migrating customer is told once; the grandfathered one never.
    run_scheduler(clock, NOV_1 + timedelta(days=11))
    run_scheduler(clock, NOV_1 + timedelta(days=12))
    [notice] = [m for m in mails_to("compta@labo-martin.fr") if "Nouveaux tarifs" in m["subject"]]
    assert "Offer migrating" in notice["subject"]
    assert [m for m in mails_to("compta@optic-sud.fr") if "tarifs" in m["subject"]] == []
    listed = merchant.get(f"/offers/{migrating}/price-changes").json["data"]
    assert listed[0]["notice_sent_at"] == iso(NOV_1 + timedelta(days=11))

    # The boundary after effective_at: the migrating subscription opens December on version 2.
    run_scheduler(clock, DEC_1 + timedelta(hours=1))
    december = invoices_of(merchant, moved_sub["id"])[1]
    assert [(line["kind"], line["amount"]) for line in december["lines"]] == [("fee", "59.00")]
    after = merchant.get(f"/subscriptions/{moved_sub['id']}").json
    assert after["offer_version"] == 2
    history = merchant.get(f"/subscriptions/{moved_sub['id']}/history").json["data"]
    [move] = [entry for entry in history if entry["type"] == "price_migrated"]
    assert (move["before"]["offer_version"], move["after"]["offer_version"]) == (1, 2)

    # The grandfathered customer is untouched: the old price, the old version.
    untouched = invoices_of(merchant, kept_sub["id"])[1]
    assert [(line["kind"], line["amount"]) for line in untouched["lines"]] == [("fee", "49.00")]
    assert merchant.get(f"/subscriptions/{kept_sub['id']}").json["offer_version"] == 1
    # A new subscription from effective_at takes the new prices.
    newcomer = new_customer(merchant, name="Vue Claire", email="compta@vue-claire.fr")
    fresh = subscribe(merchant, newcomer, keeping)
    assert fresh["offer_version"] == 2
    assert invoices_of(merchant, fresh["id"])[0]["total"] == "70.80"  # 59.00 + 20 % tax


def test_a_pending_price_change_can_be_canceled_and_then_nothing_moves(merchant, clock):
    offer_id = new_offer(merchant, simple("cancelable"))
    customer = new_customer(merchant, name="Labo Nord", email="compta@labo-nord.fr")
    sub = subscribe(merchant, customer, offer_id, start_at=iso(NOV_1))
    change = merchant.post(f"/offers/{offer_id}/price-changes", {
        "version": new_prices("59.00"), "effective_at": iso(NOV_1 + timedelta(days=20)),
        "existing": "migrate", "notice_days": 5}).json
    response = merchant.post(f"/offers/{offer_id}/price-changes/{change['id']}/cancel", {})
    assert response.status == 200, response
    assert (response.json["status"], response.json["canceled_at"]) == ("canceled", iso(NOV_1))
    assert merchant.get(f"/offers/{offer_id}").json["version"] == 1
    run_scheduler(clock, NOV_1 + timedelta(days=16))
    assert mails_to("compta@labo-nord.fr") == []
    run_scheduler(clock, DEC_1 + timedelta(hours=1))
    assert invoices_of(merchant, sub["id"])[1]["total"] == "58.80"
    assert merchant.get(f"/subscriptions/{sub['id']}").json["offer_version"] == 1
    # Once in force a change is not canceled; an unknown one is a 404.
    other = merchant.post(f"/offers/{offer_id}/price-changes", {
        "version": new_prices("61.00"), "effective_at": iso(DEC_1 + timedelta(days=2)), "existing": "migrate"}).json
    clock.set(DEC_1 + timedelta(days=3))
    response = merchant.post(f"/offers/{offer_id}/price-changes/{other['id']}/cancel", {})
    assert response.status == 409 and response.json["error"]["code"] == "price_change_effective"
    assert merchant.post(f"/offers/{offer_id}/price-changes/prc_nope/cancel", {}).status == 404


def test_price_change_errors_name_the_field(merchant, clock):
    offer_id = new_offer(merchant, simple("errors"))
    cases = [
        ({"version": new_prices("59.001"), "effective_at": iso(DEC_1), "existing": "migrate"},
         "version.components[0].amount"),
        ({"version": new_prices("59.00"), "effective_at": iso(NOV_1 - timedelta(days=1)), "existing": "migrate"},
         "effective_at"),
        ({"version": new_prices("59.00"), "effective_at": iso(DEC_1), "existing": "sometimes"}, "existing"),
        ({"version": new_prices("59.00"), "effective_at": iso(DEC_1), "existing": "migrate", "notice_days": -1},
         "notice_days"),
    ]
    for body, param in cases:
        response = merchant.post(f"/offers/{offer_id}/price-changes", body)
        assert response.status == 400, (body, response)
        assert response.json["error"]["param"] == param, (param, response.json)
    assert Decimal(merchant.get(f"/offers/{offer_id}").json["components"][0]["amount"]) == Decimal("49.00")
