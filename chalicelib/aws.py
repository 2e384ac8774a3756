"""The AWS clients of a container: one per service, built on first use (a
handler pays only for the services it calls) and kept for the container's
life, whichever thread asks first.

Every client fails fast and retries little: Lambda's own network is
reliable, and a slow call is better retried by its caller (SQS's
redelivery, the merchant's client) than waited for. SES gets longer, as a
message is larger and SES slower to answer.
"""
from __future__ import annotations

import os
import threading

_FAST = {"connect_timeout": 2, "read_timeout": 5, "retries": {"mode": "standard", "max_attempts": 3}}
_SETTINGS = {"ses": {"connect_timeout": 3, "read_timeout": 10, "retries": {"mode": "standard", "max_attempts": 3}}}

_clients: dict[str, object] = {}
_lock = threading.Lock()


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "eu-west-1"


def client(service: str):
    """The botocore client of `service` ("dynamodb", "sqs", "events", "ses")."""
    found = _clients.get(service)
    if found is None:
        with _lock:
            found = _clients.get(service)
            if found is None:
                import boto3
                from botocore.config import Config

                found = boto3.client(service, region_name=region(), config=Config(**_SETTINGS.get(service, _FAST)))
                _clients[service] = found
    return found


def reset() -> None:
    """Forget every client (tests and benchmarks that switch AWS endpoints)."""
    with _lock:
        _clients.clear()
