"""The monthly aggregates of the reports, and the markers that make each
fact count once (billing table, low-level client: the figures are added with
`ADD`, which PynamoDB cannot express without its float NumberAttribute).

- `{merchant}#report` / `month#{YYYY-MM}#{currency}`: the month's flows
  (`invoiced`, `usage_charges`, `collected`, `new`, `churned`,
  `usage#<meter>`) and the changes of the stocks in it (`recurring_delta`,
  `active_delta`, `outstanding_delta`);
- `{merchant}#report` / `stock#{currency}`: the stocks now (`recurring`,
  `active`, `outstanding`). `stock#` sorts after `month#`, so ONE Query from
  `month#{M-2}` reads everything a month's summary needs;
- `{merchant}#report_usage#{meter}` / `day#{YYYY-MM-DD}#{subscription_id}`:
  a meter's usage per day and subscription (the usage statistics);
- `{merchant}#report_feed` / `{stream event id}`: the marker of a change
  already counted, written in the same transaction as its figures, kept
  (TTL `expires_at`) longer than the stream keeps a record (24 h).

Numbers are DynamoDB numbers written and read as decimal strings (exact to
38 digits, never a binary float): money in major units, usage quantities.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal

from chalicelib.store import dynamo
from chalicelib.store.dynamo import key, n, s

# How long a marker outlives its change: the stream keeps records 24 h, a
# retried batch comes back within that.
MARKER_DAYS = 3


def report_pk(merchant_id: str) -> str:
    return f"{merchant_id}#report"


def usage_pk(merchant_id: str, meter: str) -> str:
    return f"{merchant_id}#report_usage#{meter}"


def usage_sk(day: str, subscription_id: str) -> str:
    return f"day#{day}#{subscription_id}"


def marker_pk(merchant_id: str) -> str:
    return f"{merchant_id}#report_feed"


# Aggregates keep six decimal places: money and quantities need fewer, and
# the monthly equivalent of a recurring price (a division) would otherwise
# carry 28. With at most six, a sum that falls back to zero is written
# `0.000000`, never `0E-28`, which moto's ADD cannot read back (DynamoDB
# itself normalizes numbers); each change adds and removes the same rounded
# amount, so nothing drifts.
FIGURE_QUANTUM = Decimal("0.000001")


def number(value: Decimal) -> dict:
    return {"N": format(value.quantize(FIGURE_QUANTUM), "f")}


def add_figures(
    merchant_id: str,
    change_id: str,
    figures: Mapping[tuple[str, str], Decimal],
    usage: Mapping[tuple[str, str, str], Decimal],
    expires_at: int,
) -> bool:
    """Add `figures` ((sort key, name) -> amount) to the merchant's
    aggregates and `usage` ((meter, day, subscription) -> quantity) to its
    daily usage, once per `change_id`: the marker is put (if absent) in the
    same transaction. False when the change was counted already.

    The transaction fails as a whole on a conflict with another writer of
    the same aggregate: the caller's retry (the stream's) counts it later."""
    table = dynamo.table_name()
    items = [{
        "Put": {
            "TableName": table,
            "Item": {**key(marker_pk(merchant_id), change_id), "expires_at": n(expires_at)},
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }]
    by_item: dict[tuple[str, str], dict[str, Decimal]] = {}
    for (sk, name), amount in figures.items():
        by_item.setdefault((report_pk(merchant_id), sk), {})[name] = amount
    for (meter, day, subscription_id), quantity in usage.items():
        by_item.setdefault((usage_pk(merchant_id, meter), usage_sk(day, subscription_id)), {})["quantity"] = quantity
    for (pk, sk), amounts in sorted(by_item.items()):
        names = {f"#f{i}": name for i, name in enumerate(sorted(amounts))}
        values = {f":v{i}": number(amounts[name]) for i, name in enumerate(sorted(amounts))}
        adds = ", ".join(f"#f{i} :v{i}" for i in range(len(amounts)))
        items.append({
            "Update": {
                "TableName": table,
                "Key": key(pk, sk),
                "UpdateExpression": f"SET merchant_id = :m ADD {adds}",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": {**values, ":m": s(merchant_id)},
            }
        })
    if len(items) > 100:
        raise ValueError("one change touches at most 99 aggregates")
    try:
        dynamo.client().transact_write_items(TransactItems=items)
    except Exception as error:
        codes = dynamo.cancellation_codes(error)
        if codes and codes[0] == "ConditionalCheckFailed":
            return False
        raise
    return True


def aggregates_from(merchant_id: str, month: str) -> dict[str, dict[str, Decimal]]:
    """Every month item from `month` on, and the stocks now: sort key ->
    figures. One Query (a page per 1 MB: a merchant's report partition
    holds a few items per month and currency)."""
    items = dynamo.query_all(
        KeyConditionExpression="pk = :pk AND sk >= :from",
        ExpressionAttributeValues={":pk": s(report_pk(merchant_id)), ":from": s(f"month#{month}")},
        ConsistentRead=True,
    )
    return {item["sk"]["S"]: _figures(item) for item in items}


def daily_usage(merchant_id: str, meter: str, first_day: str, last_day: str) -> Iterator[tuple[str, str, Decimal]]:
    """(day, subscription, quantity) of a meter from `first_day` to
    `last_day` included, page by page."""
    request = {
        "TableName": dynamo.table_name(),
        "KeyConditionExpression": "pk = :pk AND sk BETWEEN :a AND :b",
        "ExpressionAttributeValues": {
            ":pk": s(usage_pk(merchant_id, meter)), ":a": s(f"day#{first_day}#"), ":b": s(f"day#{last_day}#~"),
        },
    }
    while True:
        response = dynamo.client().query(**request)
        for item in response.get("Items", []):
            _, day, subscription_id = item["sk"]["S"].split("#", 2)
            yield day, subscription_id, Decimal(item["quantity"]["N"])
        last = response.get("LastEvaluatedKey")
        if not last:
            return
        request["ExclusiveStartKey"] = last


def daily_usage_of(merchant_id: str, slots: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], Decimal]:
    """The usage of each (meter, day, subscription) slot that has some, read
    by key (BatchGetItem, 100 keys a request): a few subscriptions' days,
    without reading every subscription's day of the meter."""
    slots = list(dict.fromkeys(slots))
    items, _ = dynamo.batch_get((key(usage_pk(merchant_id, m), usage_sk(d, sub)) for m, d, sub in slots),
                                projection="pk, sk, quantity")
    found = {}
    for item in items:
        meter = item["pk"]["S"].partition("#report_usage#")[2]
        _, day, subscription_id = item["sk"]["S"].split("#", 2)
        found[(meter, day, subscription_id)] = Decimal(item["quantity"]["N"])
    return found


def _figures(item: dict) -> dict[str, Decimal]:
    return {name: Decimal(value["N"]) for name, value in item.items() if "N" in value}


def earned_sk(month: str, currency: str) -> str:
    """The revenue figures of a month and currency (domain/revenue.py), in
    the report partition: `earned#` sorts before `month#`, so the summary's
    Query from `month#{M-2}` does not read them."""
    return f"earned#{month}#{currency}"


def earned_until(merchant_id: str, month: str) -> list[tuple[str, str, dict[str, Decimal]]]:
    """(month, currency, figures) of the revenue figures of every month up
    to `month`: one Query (a few items a month)."""
    items = dynamo.query_all(
        KeyConditionExpression="pk = :pk AND sk BETWEEN :a AND :b",
        ExpressionAttributeValues={":pk": s(report_pk(merchant_id)), ":a": s("earned#"),
                                   ":b": s(f"earned#{month}#~")},
        ConsistentRead=True,
    )
    found = []
    for item in items:
        _, item_month, currency = item["sk"]["S"].split("#", 2)
        found.append((item_month, currency, _figures(item)))
    return found
