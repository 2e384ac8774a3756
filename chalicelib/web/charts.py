"""The console's bar charts (dashboard, reports, a customer's usage), drawn as
SVG by the `bar_chart` macro of templates/web/macros.html.

The values stay exact decimals: the page prints them (a bar's tooltip, the
figures table under the chart, the top of the scale) as money or as
quantities, never rounded through a float. Only the bars' geometry, in SVG
units, is computed in floats, here rather than in the template."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from chalicelib.web.render import text

WIDTH, HEIGHT, PAD = 720, 220, 34
# Room above the tallest bar for the scale's label.
HEADROOM = 10


@dataclass(frozen=True)
class Bar:
    name: str
    colour: str
    value: Decimal
    x: str
    y: str
    width: str
    height: str


@dataclass(frozen=True)
class Column:
    label: str
    label_x: str
    labelled: bool
    bars: tuple[Bar, ...]


@dataclass(frozen=True)
class Chart:
    title: str
    kind: str  # "money" or "number"
    currency: str | None
    first_column: str  # the text key of the figures table's first heading
    legend: tuple[tuple[str, str], ...]  # (name, colour) per series
    top: Decimal
    columns: tuple[Column, ...]
    width: int = WIDTH
    height: int = HEIGHT
    axis_y: int = HEIGHT - PAD
    pad: int = PAD


def as_decimal(value) -> Decimal:
    """A figure as the reports and usage give it (a decimal string, a number,
    or nothing): nothing and anything unreadable count as zero."""
    try:
        found = Decimal(str(value if value not in (None, "") else 0))
    except InvalidOperation:
        return Decimal(0)
    return found if found.is_finite() else Decimal(0)


def bar_chart(title: str, labels: list[str], series: list[tuple[str, str, list]], *, kind: str = "number",
              currency: str | None = None, first_column: str = "month", label_every: int = 1) -> Chart:
    """`series`: (name, colour, one value per label). Bars of a label stand
    side by side; a value below zero is drawn as an empty bar (a chart of
    amounts due or usage has none) but printed as it is."""
    values = [[as_decimal(v) for v in raw] + [Decimal(0)] * (len(labels) - len(raw)) for _, _, raw in series]
    top = max((v for row in values for v in row), default=Decimal(0))
    scale = (HEIGHT - PAD - HEADROOM) / float(top) if top > 0 else 0.0
    slot = (WIDTH - PAD) / (len(labels) or 1)
    bar = slot * 0.8 / (len(series) or 1)
    columns = []
    for i, label in enumerate(labels):
        x0 = PAD + i * slot + slot * 0.1
        bars = []
        for j, (name, colour, _) in enumerate(series):
            value = values[j][i]
            height = max(float(value), 0.0) * scale
            bars.append(Bar(name=name, colour=colour, value=value, x=_svg(x0 + j * bar),
                            y=_svg(HEIGHT - PAD - height), width=_svg(bar - 1), height=_svg(height)))
        columns.append(Column(label=label, label_x=_svg(PAD + i * slot + slot / 2),
                              labelled=i % max(label_every, 1) == 0, bars=tuple(bars)))
    return Chart(title=title, kind=kind, currency=currency, first_column=first_column,
                 legend=tuple((name, colour) for name, colour, _ in series), top=top, columns=tuple(columns))


def month_charts(lang: str, currency: str, months: list[dict]) -> dict[str, Chart]:
    """The dashboard's and the reports' charts of one currency, one bar per
    month of `months` (services/reports.py `history`): MRR, invoiced beside
    collected, active subscriptions."""
    labels = [m["month"][5:] + "/" + m["month"][2:4] for m in months]

    def of(name: str) -> list:
        return [m["currencies"].get(currency, {}).get(name) for m in months]

    def t(key: str) -> str:
        return text(lang, key)

    return {
        "mrr": bar_chart(f"{t('mrr')} {currency}", labels, [(t("mrr"), "#1f5fbf", of("mrr"))],
                         kind="money", currency=currency),
        "invoiced": bar_chart(f"{t('invoiced_and_collected')} {currency}", labels, [
            (t("invoiced"), "#7a8fb8", of("invoiced")), (t("collected"), "#157f3c", of("collected"))],
            kind="money", currency=currency),
        "active": bar_chart(t("active_subscriptions"), labels,
                            [(t("active_subscriptions"), "#9a6700", of("active_subscriptions"))]),
    }


def _svg(length: float) -> str:
    return f"{length:.1f}"
