"""Settings, read once from the environment and typed.

In AWS the secrets (operator key, Stripe keys) are not in the environment:
the environment names their SSM parameters and `secret()` reads them through
Powertools parameters, cached for a few minutes. The local stage (and the
tests' stage) puts the secrets themselves in the environment. A deployed
stage never reads a secret from the environment, and a function of a
deployed stage refuses to start with one there (`ConfigurationError`): a
plaintext key in a function's configuration is readable by anyone who may
read the function, and would look like it overrides the parameter the
operator rotates. (Outside Lambda, e.g. `chalice package` importing the app
for a stage from a shell that holds the local stage's secrets, they are
only ignored.)

Each function that calls Stripe reads its own restricted key: its
`STRIPE_SECRET_KEY_PARAMETER` names `/billing/<stage>/stripe-key/<function>`
(.chalice/config.json, per function); the local stage has one key for all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Settings:
    stage: str
    version: str
    table_name: str
    idempotency_table_name: str
    public_base_url: str
    usage_queue_url: str
    usage_dead_letter_queue_url: str
    billing_queue_url: str
    notifications_queue_url: str
    event_bus_name: str
    alert_sender: str
    ses_configuration_set: str
    stripe_api_base: str | None
    local_clock_file: str | None
    payment_link_days: int
    billing_shards: int
    billing_worker_concurrency: int
    max_body_bytes: int
    staff_user_pool_id: str
    staff_user_pool_client_id: str
    console_session_hours: int
    # The S3 bucket the e-invoices are dropped in for the merchants'
    # e-invoicing platforms (services/einvoices.py); empty: no drop.
    einvoice_bucket: str = ""
    # The webhook queue: events from the bus and the attempts the retry job
    # queues (services/webhooks.py).
    webhook_queue_url: str = ""

    @property
    def is_local(self) -> bool:
        return self.stage == "local"

    @property
    def is_deployed(self) -> bool:
        """A stage in AWS (dev, prod...), not the local stage or the tests."""
        return self.stage not in ("local", "test")


class ConfigurationError(RuntimeError):
    """The environment cannot run this stage: the message says what to change."""


@lru_cache(maxsize=1)
def settings() -> Settings:
    env = os.environ
    if env.get("AWS_LAMBDA_FUNCTION_NAME"):  # at a function's start
        refuse_plaintext_secrets(env.get("STAGE", "dev"), env)
    return Settings(
        stage=env.get("STAGE", "dev"),
        version=env.get("APP_VERSION", "0.1.0"),
        table_name=env.get("TABLE_NAME", "billing"),
        idempotency_table_name=env.get("IDEMPOTENCY_TABLE_NAME", "billing-idempotency"),
        public_base_url=env.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/"),
        usage_queue_url=env.get("USAGE_QUEUE_URL", ""),
        # Where ingestion parks what it will never ingest, with the reason
        # (unset: found from the usage queue's redrive policy).
        usage_dead_letter_queue_url=env.get("USAGE_DEAD_LETTER_QUEUE_URL", ""),
        billing_queue_url=env.get("BILLING_QUEUE_URL", ""),
        notifications_queue_url=env.get("NOTIFICATIONS_QUEUE_URL", ""),
        event_bus_name=env.get("EVENT_BUS_NAME", "billing"),
        alert_sender=env.get("ALERT_SENDER", "billing@example.com"),
        # Where SES reports what happened to a message after accepting it
        # (bounces, complaints): empty, nothing is reported.
        ses_configuration_set=env.get("SES_CONFIGURATION_SET", ""),
        stripe_api_base=env.get("STRIPE_API_BASE") or None,
        local_clock_file=env.get("LOCAL_CLOCK_FILE") or None,
        payment_link_days=int(env.get("PAYMENT_LINK_DAYS", "7")),
        billing_shards=int(env.get("BILLING_SHARDS", "16")),
        # Stripe allows 25 writes/s per endpoint in live mode and every
        # billing worker makes about one write per second (a charge takes
        # ~1 s): this many workers saturate it without being throttled
        # (docs/performance.md, "Billing").
        billing_worker_concurrency=_within("BILLING_WORKER_CONCURRENCY", env.get("BILLING_WORKER_CONCURRENCY", "25"),
                                           2, 1000),
        max_body_bytes=int(env.get("MAX_BODY_BYTES", str(256 * 1024))),
        # The Cognito user pool holding the console's staff accounts.
        staff_user_pool_id=env.get("STAFF_USER_POOL_ID", ""),
        staff_user_pool_client_id=env.get("STAFF_USER_POOL_CLIENT_ID", ""),
        # A console session ends this long after sign-in, used or not.
        console_session_hours=_within("CONSOLE_SESSION_HOURS", env.get("CONSOLE_SESSION_HOURS", "10"), 1, 24),
        einvoice_bucket=env.get("EINVOICE_BUCKET", ""),
        webhook_queue_url=env.get("WEBHOOK_QUEUE_URL", ""),
    )


def _within(name: str, text: str, low: int, high: int) -> int:
    """An integer setting that AWS bounds (an SQS event source's
    MaximumConcurrency is 2..1000): refused here, at start, rather than by
    CloudFormation half-way through a deploy."""
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}")
    return value


_SECRET_NAMES = {
    "admin_api_key": "ADMIN_API_KEY",
    "stripe_secret_key": "STRIPE_SECRET_KEY",
    "stripe_webhook_secret": "STRIPE_WEBHOOK_SECRET",
    # Not a secret (the payment page shows it), but it goes with the secret
    # key of the same Stripe account, so it is kept beside it.
    "stripe_publishable_key": "STRIPE_PUBLISHABLE_KEY",
    "token_signing_key": "TOKEN_SIGNING_KEY",
}


# The stages whose secrets may be plaintext in the environment: this
# machine's (`make run`) and the tests'. Every other stage is deployed.
PLAINTEXT_SECRET_STAGES = ("local", "test")


def refuse_plaintext_secrets(stage: str, env) -> None:
    """ConfigurationError when a deployed stage's environment holds a secret
    itself (`STRIPE_SECRET_KEY=...`) rather than the name of its SSM
    parameter (`STRIPE_SECRET_KEY_PARAMETER=...`)."""
    if stage in PLAINTEXT_SECRET_STAGES:
        return
    found = sorted(env_name for env_name in _SECRET_NAMES.values() if env.get(env_name))
    if found:
        raise ConfigurationError(
            f"{', '.join(found)} set in the environment of the {stage!r} stage: a deployed stage reads its "
            f"secrets from SSM only ({found[0]}_PARAMETER names the parameter, docs/deploy.md); remove the "
            "plaintext value from the function's configuration")


def secret(name: str) -> str:
    """A secret by its setting name: from the environment on the local stage
    and in the tests, else from the SSM parameter named by
    `<ENV_NAME>_PARAMETER`, decrypted and cached by Powertools (5 minutes).
    A deployed stage never reads a secret from the environment."""
    env_name = _SECRET_NAMES[name]
    stage = os.environ.get("STAGE", "dev")
    if stage in PLAINTEXT_SECRET_STAGES:
        value = os.environ.get(env_name)
        if value:
            return value
    parameter = os.environ.get(f"{env_name}_PARAMETER")
    if not parameter:
        raise ConfigurationError(
            f"{env_name}_PARAMETER is not set for this function on the {stage!r} stage (.chalice/config.json)"
            if stage not in PLAINTEXT_SECRET_STAGES else f"{env_name} or {env_name}_PARAMETER must be set")
    from aws_lambda_powertools.utilities import parameters

    return parameters.get_parameter(parameter, decrypt=True, max_age=300)
