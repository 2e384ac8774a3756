"""Settings that AWS bounds are refused at start, not half-way through a deploy."""
import pytest

from chalicelib.config import settings


@pytest.fixture
def fresh_settings():
    settings.cache_clear()
    yield settings
    settings.cache_clear()


@pytest.mark.parametrize("value", ["1", "1001"])
def test_the_billing_worker_cap_must_be_one_sqs_accepts(monkeypatch, fresh_settings, value):
    monkeypatch.setenv("BILLING_WORKER_CONCURRENCY", value)
    with pytest.raises(ValueError, match="BILLING_WORKER_CONCURRENCY"):
        fresh_settings()


def test_the_billing_worker_cap_is_read_from_the_environment(monkeypatch, fresh_settings):
    monkeypatch.setenv("BILLING_WORKER_CONCURRENCY", "40")
    assert fresh_settings().billing_worker_concurrency == 40
    monkeypatch.delenv("BILLING_WORKER_CONCURRENCY", raising=False)
    settings.cache_clear()
    assert fresh_settings().billing_worker_concurrency == 25
