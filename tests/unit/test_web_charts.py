"""The console's bar charts (chalicelib/web/charts.py): exact values kept for
printing, bars scaled to the tallest, one column per label."""
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.web.charts import HEADROOM, HEIGHT, PAD, as_decimal, bar_chart

DRAWN = HEIGHT - PAD - HEADROOM  # the tallest bar's height


def test_values_are_kept_exact_for_printing():
    chart = bar_chart("MRR", ["10/26", "11/26"], [("MRR", "#000", ["0.10", "1234567.89"])], kind="money",
                      currency="EUR")
    assert [bar.value for column in chart.columns for bar in column.bars] == [Decimal("0.10"), Decimal("1234567.89")]
    assert chart.top == Decimal("1234567.89")
    # No float on the way: 0.1 + 0.2 is 0.3 here.
    assert sum((b.value for c in bar_chart("x", ["a", "b"], [("s", "#000", ["0.1", "0.2"])]).columns
                for b in c.bars), Decimal(0)) == Decimal("0.3")


def test_the_tallest_bar_fills_the_chart_and_the_others_scale():
    chart = bar_chart("Usage", ["01", "02", "03"], [("hours", "#000", ["1.5", "3", "0"])])
    heights = [float(column.bars[0].height) for column in chart.columns]
    assert heights == [DRAWN / 2, DRAWN, 0.0]
    # A bar stands on the axis.
    assert all(float(c.bars[0].y) + float(c.bars[0].height) == HEIGHT - PAD for c in chart.columns)


def test_bars_of_a_label_stand_side_by_side_and_labels_thin_out():
    chart = bar_chart("Invoiced and collected", [f"{d:02}" for d in range(1, 11)],
                      [("invoiced", "#111", ["10"] * 10), ("collected", "#222", ["5"] * 10)], label_every=5)
    first = chart.columns[0]
    assert float(first.bars[0].x) + float(first.bars[0].width) < float(first.bars[1].x)
    assert [c.label for c in chart.columns if c.labelled] == ["01", "06"]
    assert chart.legend == (("invoiced", "#111"), ("collected", "#222"))


def test_nothing_missing_or_unreadable_counts_as_zero_and_an_empty_chart_draws_nothing():
    assert [as_decimal(v) for v in (None, "", "abc", "NaN", "Infinity", 3, "2.50")] == [
        0, 0, 0, 0, 0, 3, Decimal("2.50")]
    chart = bar_chart("MRR", ["a", "b"], [("MRR", "#000", [None])])
    assert [c.bars[0].value for c in chart.columns] == [0, 0]
    assert chart.top == 0 and all(float(c.bars[0].height) == 0 for c in chart.columns)
    assert bar_chart("none", [], [("s", "#000", [])]).columns == ()


def test_a_value_below_zero_is_printed_as_it_is_and_drawn_empty():
    chart = bar_chart("Collected", ["a", "b"], [("collected", "#000", ["-12.30", "10"])], kind="money")
    assert chart.columns[0].bars[0].value == Decimal("-12.30")
    assert float(chart.columns[0].bars[0].height) == 0


amounts = st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False, allow_infinity=False)


@given(st.lists(amounts, min_size=1, max_size=31))
def test_every_bar_fits_and_keeps_its_value(values):
    chart = bar_chart("x", [str(i) for i in range(len(values))], [("s", "#000", [str(v) for v in values])])
    assert [c.bars[0].value for c in chart.columns] == values
    assert chart.top == max(values)
    for column in chart.columns:
        bar = column.bars[0]
        assert 0 <= float(bar.height) <= DRAWN + 0.05
        assert 0 <= float(bar.y) <= HEIGHT - PAD


def test_quantities_are_printed_without_trailing_zeros_in_the_pages_language():
    from chalicelib.web.render import number

    assert number("12.000000", "fr") == "12" and number(Decimal("1200"), "en") == "1200"
    assert number("2.50", "fr") == "2,5" and number("0.0042", "en") == "0.0042"
    assert number(None, "fr") == "–" and number("n/a", "fr") == "n/a"


def test_the_monthly_charts_of_a_currency_read_its_figures_month_by_month():
    from chalicelib.web.charts import month_charts

    months = [{"month": "2026-10", "currencies": {"EUR": {"mrr": "49.00", "invoiced": "58.80", "collected": "0",
                                                          "active_subscriptions": 1}}},
              {"month": "2026-11", "currencies": {"USD": {"mrr": "10.00"}}}]
    charts = month_charts("en", "EUR", months)
    assert [c.label for c in charts["mrr"].columns] == ["10/26", "11/26"]
    assert [c.bars[0].value for c in charts["mrr"].columns] == [Decimal("49.00"), 0]
    assert [[b.value for b in c.bars] for c in charts["invoiced"].columns] == [
        [Decimal("58.80"), 0], [0, 0]]
    assert charts["mrr"].kind == "money" and charts["active"].kind == "number"
    assert charts["active"].top == 1
