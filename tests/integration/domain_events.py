"""Reading what the backend published on its EventBridge bus (moto): a rule
matching `source` billing delivers every event to an SQS queue. The events
are derived from the billing table's stream (services/domain_events.py):
reading them first hands the stream's new records to `change_feed`, as
Lambda would."""
from __future__ import annotations

import json
import os

import boto3
import pytest


_streams: dict[str, object] = {}


def derive_events() -> int:
    """Hand the billing table's new stream records to `change_feed`, as
    Lambda would: the domain events of the writes made so far go to the bus.
    One reader per table (a table made anew has a stream of its own)."""
    from app import change_feed
    from tests.integration.table_stream import billing_table_stream

    stream = billing_table_stream()
    stream = _streams.setdefault(stream.arn, stream)
    return stream.deliver(change_feed)


class PublishedEvents:
    def __init__(self):
        region = os.environ.get("AWS_DEFAULT_REGION", "eu-west-1")
        self.sqs = boto3.client("sqs", region_name=region)
        events = boto3.client("events", region_name=region)
        bus = os.environ["EVENT_BUS_NAME"]
        self.url = self.sqs.create_queue(QueueName="published-domain-events")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="all-billing-events", EventBusName=bus, EventPattern=json.dumps({"source": ["billing"]}))
        events.put_targets(Rule="all-billing-events", EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])
        self.seen: list[dict] = []

    def all(self) -> list[dict]:
        """Every event published so far, oldest first: {"detail-type", "source", "detail"}."""
        derive_events()
        while True:
            answer = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10)
            messages = answer.get("Messages", [])
            if not messages:
                return self.seen
            for message in messages:
                self.seen.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def of_type(self, detail_type: str) -> list[dict]:
        return [event["detail"] for event in self.all() if event["detail-type"] == detail_type]


@pytest.fixture
def published(aws) -> PublishedEvents:
    return PublishedEvents()
