"""The local stage's stand-in for a DynamoDB stream event source: reads a
table's stream on moto and hands the records to a function that consumes
it, in batches, as Lambda does: a batch that reports a failure
(ReportBatchItemFailures) is handed again from that record on. A table
read by several functions has one reader per function (an event source
mapping each, with its own position in the stream)."""
from __future__ import annotations

import os
from collections.abc import Callable

import boto3

from infra.local.lambda_events import LocalContext


def stream_consumers(app) -> list[tuple[str, Callable]]:
    """(table logical id, a handler of app.py that reads its stream), for
    every stream event source of the app."""
    from infra.aws.template import table_named

    import app as module

    return [
        (table_named(source.stream_arn), getattr(module, source.name))
        for source in app.event_sources
        if type(source).__name__ == "DynamoDBEventConfig"
    ]


class TableStream:
    """One table's stream, read from where the last read stopped."""

    def __init__(self, table_name: str, region: str | None = None):
        region = region or os.environ.get("AWS_DEFAULT_REGION", "eu-west-1")
        self.arn = boto3.client("dynamodb", region_name=region).describe_table(TableName=table_name)["Table"][
            "LatestStreamArn"]
        # botocore names an account endpoint for a stream ARN, which moto
        # does not answer: the regional one unless the stage set its own.
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or f"https://streams.dynamodb.{region}.amazonaws.com"
        self.streams = boto3.client("dynamodbstreams", region_name=region, endpoint_url=endpoint)
        self.iterators: dict[str, str] = {}
        self.pending: list[dict] = []
        self.delivered: list[dict] = []

    def read(self) -> list[dict]:
        """Every record written since the last read, shaped as Lambda's records."""
        records = []
        shards = self.streams.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"]
        for shard in shards:
            shard_id = shard["ShardId"]
            iterator = self.iterators.get(shard_id) or self.streams.get_shard_iterator(
                StreamArn=self.arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while True:
                answer = self.streams.get_records(ShardIterator=iterator, Limit=1000)
                iterator = answer["NextShardIterator"]
                records.extend(answer["Records"])
                if not answer["Records"]:
                    break
            self.iterators[shard_id] = iterator
        return [{**record, "eventSource": "aws:dynamodb", "eventSourceARN": self.arn} for record in records]

    def deliver(self, handler: Callable, batch_size: int = 100, attempts: int = 3) -> int:
        """Hand the new records to `handler` in batches; a failed record is
        handed again (with those after it) up to `attempts` times in this
        call, then kept for the next call. Returns how many were counted."""
        self.pending.extend(self.read())
        done = 0
        failures = 0
        while self.pending and failures < attempts:
            batch = self.pending[:batch_size]
            result = handler({"Records": batch}, LocalContext())
            failed = [f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])]
            position = [r["dynamodb"]["SequenceNumber"] for r in batch].index(failed[0]) if failed else len(batch)
            self.delivered.extend(batch[:position])
            del self.pending[:position]
            done += position
            failures += bool(failed)
        return done
