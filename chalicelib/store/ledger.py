"""The ledger's entries by month (domain/ledger.py), written by the report
feed from the billing table's stream, read by the journal and FEC exports.

- `{merchant}#ledger#{YYYY-MM}` / `{YYYY-MM-DD}#{entry key}`: one item per
  entry (its lines by account role, as JSON text). A month's journal is one
  Query of its partition, in date order; a year's FEC twelve.

An entry's key names its fact (`inv_…#invoice`, `cn_…#credit_note`,
`pay_…#payment` …), so writing it again (a redelivered stream record)
rewrites the same item: no marker is needed.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from chalicelib.domain.ledger import Entry
from chalicelib.store import dynamo
from chalicelib.store.dynamo import key, s


def ledger_pk(merchant_id: str, month: str) -> str:
    return f"{merchant_id}#ledger#{month}"


def entry_sk(entry: Entry) -> str:
    return f"{entry.day.isoformat()}#{entry.key}"


def put_entries(merchant_id: str, entries: Iterable[Entry]) -> None:
    """Write `entries` (BatchWriteItem, 25 a request, what DynamoDB leaves
    unprocessed sent again; raises when some is still left, for the stream
    to retry)."""
    requests = [{
        "PutRequest": {"Item": {
            **key(ledger_pk(merchant_id, entry.day.strftime("%Y-%m")), entry_sk(entry)),
            "merchant_id": s(merchant_id), "entry": s(json.dumps(entry.as_dict(), separators=(",", ":"))),
        }}
    } for entry in entries]
    table = dynamo.table_name()
    for start in range(0, len(requests), 25):
        pending = {table: requests[start:start + 25]}
        for _ in range(5):
            response = dynamo.client().batch_write_item(RequestItems=pending)
            pending = response.get("UnprocessedItems") or {}
            if not pending:
                break
        if pending:
            raise RuntimeError("ledger entries left unprocessed by DynamoDB")


def entries_of_month(merchant_id: str, month: str) -> Iterator[Entry]:
    """The month's entries in date order, page by page."""
    request = {
        "TableName": dynamo.table_name(),
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": s(ledger_pk(merchant_id, month))},
    }
    while True:
        response = dynamo.client().query(**request)
        for item in response.get("Items", []):
            yield Entry.from_dict(json.loads(item["entry"]["S"]))
        last = response.get("LastEvaluatedKey")
        if not last:
            return
        request["ExclusiveStartKey"] = last
