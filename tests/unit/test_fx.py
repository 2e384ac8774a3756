"""The report's total in the merchant's currency: converted at the merchant's
rates, a currency without a rate listed and never summed."""
from chalicelib.domain.fx import converted_total

FIGURES = {"mrr": "100.00", "mrr_recurring": "100.00", "mrr_usage": "0.00", "arr": "1200.00",
           "invoiced": "50.00", "collected": "40.00", "outstanding": "10.00", "usage_charges": "0.00"}


def test_each_currency_at_its_rate_summed_and_rounded_once():
    report = {"EUR": FIGURES, "USD": {**FIGURES, "mrr": "10.01"}, "JPY": {**FIGURES, "mrr": "1000"}}
    rates = {"USD": {"rate": "0.925", "set_at": "2026-12-01T00:00:00Z"}, "JPY": {"rate": "0.0061", "set_at": None}}
    total = converted_total(report, "EUR", rates)
    # 100 + 10.01 x 0.925 (9.25925) + 1000 x 0.0061 (6.1) = 115.35925 -> 115.36
    assert total["mrr"] == "115.36"
    assert total["currency"] == "EUR"
    assert total["converted"] == ["JPY", "USD"] and total["not_converted"] == []
    assert total["rates"]["USD"] == {"rate": "0.925", "set_at": "2026-12-01T00:00:00Z"}


def test_a_currency_without_a_rate_is_listed_not_summed():
    total = converted_total({"EUR": FIGURES, "KWD": {**FIGURES, "mrr": "99.000"}}, "EUR", {})
    assert total["mrr"] == "100.00"
    assert total["not_converted"] == ["KWD"] and total["converted"] == []
    assert total["rates"] == {}
