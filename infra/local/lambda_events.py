"""Lambda-shaped events for the local stage and the tests: an SQS batch as
Lambda delivers it, and the deletion of what the handler did not report as
failed."""
from __future__ import annotations

import os
from typing import Callable

import boto3


class LocalContext:
    function_name = "local"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:eu-west-1:000000000000:function:local"
    aws_request_id = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def queue_consumers(app) -> dict[str, Callable]:
    """Queue URL -> handler for every `@app.on_sqs_message` of the app,
    matched by the queue name its event source names."""
    sqs = boto3.client("sqs")
    consumers = {}
    for source in app.event_sources:
        queue = getattr(source, "queue", None)
        if queue is None or getattr(source, "queue_arn", None):
            continue
        url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        # The Lambda entry point Chalice built for the handler (middleware
        # included); the decorated function is not an attribute of the app.
        consumers[url] = app.handler_map[source.name]
    return consumers


def sqs_event(messages: list[dict], queue_url: str) -> dict:
    region = os.environ.get("AWS_REGION", "eu-west-1")
    arn = f"arn:aws:sqs:{region}:000000000000:{queue_url.rsplit('/', 1)[1]}"
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {
                    "ApproximateReceiveCount": message.get("Attributes", {}).get("ApproximateReceiveCount", "1"),
                    "SentTimestamp": message.get("Attributes", {}).get("SentTimestamp", "0"),
                },
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": region,
            }
            for message in messages
        ]
    }


def drain_once(queue_url: str, handler: Callable, wait_seconds: int = 0, batch_size: int = 10) -> int:
    """Receive one batch, hand it to the handler, delete what succeeded.
    Returns how many messages were received."""
    sqs = boto3.client("sqs")
    messages = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=batch_size, WaitTimeSeconds=wait_seconds,
        AttributeNames=["All"], MessageAttributeNames=["All"],
    ).get("Messages", [])
    if not messages:
        return 0
    try:
        result = handler(sqs_event(messages, queue_url), LocalContext()) or {}
    except Exception:
        # As in Lambda: the whole batch comes back after the visibility timeout.
        return len(messages)
    failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
    done = [m for m in messages if m["MessageId"] not in failed]
    if done:
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
        )
    return len(messages)
