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


# DynamoDB's answers to a request rate above what the table (or the
# account) takes at the moment; botocore and PynamoDB retried them already.
THROTTLING_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
})


def is_throttled(error: BaseException | None) -> bool:
    """Whether DynamoDB refused `error`'s request (or the one behind it, a
    PynamoDB error wraps botocore's) for its rate, after the retries: the
    same request is expected to succeed a little later."""
    seen = 0
    while error is not None and seen < 5:
        response = getattr(error, "response", None)
        code = (response or {}).get("Error", {}).get("Code") if isinstance(response, dict) else None
        code = code or getattr(error, "cause_response_code", None)
        if code in THROTTLING_CODES:
            return True
        error = error.__cause__ or getattr(error, "cause", None)
        seen += 1
    return False
