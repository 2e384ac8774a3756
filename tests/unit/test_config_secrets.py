"""Secrets on a deployed stage come from SSM only: a plaintext secret in a
function's environment stops it at start, and never overrides its
parameter; the local stage and the tests keep theirs in the environment."""
from __future__ import annotations

import pytest

from chalicelib import config
from chalicelib.config import ConfigurationError, refuse_plaintext_secrets, secret, settings

SECRETS = ("ADMIN_API_KEY", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_PUBLISHABLE_KEY", "TOKEN_SIGNING_KEY")


@pytest.fixture
def deployed(monkeypatch):
    """A function of the prod stage as Lambda starts it, without plaintext secrets."""
    settings.cache_clear()
    monkeypatch.setenv("STAGE", "prod")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "billing-prod-api_handler")
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    settings.cache_clear()


@pytest.fixture
def ssm(monkeypatch):
    """What Powertools would read from SSM, by parameter name."""
    from aws_lambda_powertools.utilities import parameters

    read = []

    def get_parameter(name, decrypt=False, max_age=None):
        assert decrypt, "a SecureString is read decrypted"
        read.append(name)
        return f"from-ssm:{name}"

    monkeypatch.setattr(parameters, "get_parameter", get_parameter)
    return read


@pytest.mark.parametrize("name", ["STRIPE_SECRET_KEY", "ADMIN_API_KEY", "TOKEN_SIGNING_KEY"])
def test_a_deployed_function_with_a_plaintext_secret_does_not_start(deployed, name):
    deployed.setenv(name, "sk_live_plaintext")
    with pytest.raises(ConfigurationError, match=rf"{name} set in the environment of the 'prod' stage"):
        settings()


def test_the_error_names_every_plaintext_secret_and_what_to_use_instead():
    env = {"STRIPE_SECRET_KEY": "sk", "ADMIN_API_KEY": "k", "STRIPE_SECRET_KEY_PARAMETER": "/billing/dev/stripe-key/x"}
    with pytest.raises(ConfigurationError) as raised:
        refuse_plaintext_secrets("dev", env)
    assert "ADMIN_API_KEY, STRIPE_SECRET_KEY" in str(raised.value)
    assert "ADMIN_API_KEY_PARAMETER names the parameter" in str(raised.value)


@pytest.mark.parametrize("stage", ["local", "test"])
def test_the_local_stage_and_the_tests_keep_their_secrets_in_the_environment(stage):
    refuse_plaintext_secrets(stage, {name: "plain" for name in SECRETS})


def test_a_deployed_function_reads_its_parameter(deployed, ssm):
    deployed.setenv("STRIPE_SECRET_KEY_PARAMETER", "/billing/prod/stripe-key/api_handler")
    settings()  # starts
    assert secret("stripe_secret_key") == "from-ssm:/billing/prod/stripe-key/api_handler"
    assert ssm == ["/billing/prod/stripe-key/api_handler"]


def test_outside_lambda_a_deployed_stage_ignores_plaintext_secrets(monkeypatch, ssm):
    """`chalice package` imports the app for a stage from a shell that may
    hold the local stage's secrets: it starts, and reads nothing from them."""
    settings.cache_clear()
    monkeypatch.setenv("STAGE", "dev")
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_from_the_shell")
    monkeypatch.setenv("STRIPE_SECRET_KEY_PARAMETER", "/billing/dev/stripe-key/billing_worker")
    try:
        assert settings().stage == "dev"
        assert secret("stripe_secret_key") == "from-ssm:/billing/dev/stripe-key/billing_worker"
    finally:
        settings.cache_clear()


def test_a_deployed_function_without_its_parameter_says_which(deployed):
    deployed.delenv("STRIPE_SECRET_KEY_PARAMETER", raising=False)
    with pytest.raises(ConfigurationError, match="STRIPE_SECRET_KEY_PARAMETER is not set for this function"):
        secret("stripe_secret_key")


def test_the_tests_stage_reads_the_environment(monkeypatch, ssm):
    monkeypatch.setenv("STAGE", "test")
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_local")
    assert secret("stripe_secret_key") == "sk_test_local"
    assert ssm == []


def test_every_secret_is_covered():
    assert set(config._SECRET_NAMES.values()) == set(SECRETS)
