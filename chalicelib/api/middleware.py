"""Chalice middleware for every handler: Powertools' structured logging with
the Lambda context, and metrics published once per invocation."""
from chalice import ConvertToMiddleware

from chalicelib.observability import logger, metrics


def publish_metrics(event, get_response):
    try:
        return get_response(event)
    finally:
        # Only when something was counted: Powertools warns on an empty flush.
        if metrics.metric_set:
            metrics.flush_metrics()


def register(app) -> None:
    app.register_middleware(ConvertToMiddleware(logger.inject_lambda_context(clear_state=True)), "all")
    app.register_middleware(publish_metrics, "all")
