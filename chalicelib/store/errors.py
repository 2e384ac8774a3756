"""Turning DynamoDB's refusals into the domain's errors."""
from __future__ import annotations

from pynamodb.exceptions import PynamoDBException

from chalicelib.domain.errors import Conflict


def is_condition_failure(error: PynamoDBException) -> bool:
    code = getattr(error, "cause_response_code", None)
    return code in ("ConditionalCheckFailedException", "TransactionCanceledException")


def raise_if_condition_failed(error: PynamoDBException, message: str) -> None:
    if is_condition_failure(error):
        raise Conflict(message, code="version_conflict") from error
