"""What the benchmarks share: a fake-credential environment for moto
in-process, and a meter of the AWS calls our code makes.

Moto answers AWS calls inside this process, so a plain CPU clock around a
handler would bill moto's work (parsing the request, evaluating expressions,
storing items: often most of the time) to our code. `AwsMeter` wraps the
two layers botocore goes through: `BaseClient._make_api_call` (the SDK's
client side, which a Lambda pays too: building, signing, parsing) and moto's
stub (what AWS would do, which a Lambda does not pay), and times both with
the thread's CPU clock. Our CPU is then the handler's CPU minus moto's.
"""
from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from types import SimpleNamespace

ENVIRONMENT = dict(
    AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_SESSION_TOKEN="bench",
    AWS_DEFAULT_REGION="eu-west-1", AWS_REGION="eu-west-1", STAGE="test", ADMIN_API_KEY="bench-admin",
    TOKEN_SIGNING_KEY="bench-token", STRIPE_SECRET_KEY="sk_test_bench", STRIPE_WEBHOOK_SECRET="whsec_bench",
    STRIPE_PUBLISHABLE_KEY="pk_test_bench", POWERTOOLS_SERVICE_NAME="billing", POWERTOOLS_LOG_LEVEL="ERROR",
    POWERTOOLS_METRICS_NAMESPACE="Billing",
)


def use_bench_environment() -> None:
    """Fake credentials and the test stage: nothing can reach AWS or Stripe."""
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.update(ENVIRONMENT)


class AwsMeter:
    """Counts AWS calls by (service, operation) and times the SDK and moto.

    `install()` patches botocore and moto for the life of the meter
    (`uninstall()` undoes it); `take()` returns and resets what was counted
    since the last `take()`."""

    def __init__(self, capacity=None):
        self.counts: Counter = Counter()
        self.sdk_cpu = 0.0
        self.moto_cpu = 0.0
        self._originals = None
        # Optional: bench_ingest.Meter, which computes DynamoDB capacity units
        # from the items before and after each request (its hooks' own time
        # is kept out of the SDK's).
        self.capacity = capacity

    def install(self) -> "AwsMeter":
        from botocore.client import BaseClient
        from moto.core.botocore_stubber import BotocoreStubber

        original_call = BaseClient._make_api_call
        original_stub = BotocoreStubber.__call__
        meter = self

        def counted_call(client, operation, params):
            service = client.meta.service_model.service_name
            meter.counts[(service, operation)] += 1
            capacity = meter.capacity if service == "dynamodb" else None
            hooks = capacity.hook_cpu if capacity else 0.0
            started = time.thread_time()
            try:
                if capacity is None:
                    return original_call(client, operation, params)
                model, context = SimpleNamespace(name=operation), {}
                capacity.before_call(model, params, context)
                response = original_call(client, operation, params)
                capacity.after_call(model, response, context)
                return response
            finally:
                meter.sdk_cpu += time.thread_time() - started - ((capacity.hook_cpu - hooks) if capacity else 0.0)

        def timed_stub(stub, *args, **kwargs):
            started = time.thread_time()
            try:
                return original_stub(stub, *args, **kwargs)
            finally:
                meter.moto_cpu += time.thread_time() - started

        BaseClient._make_api_call = counted_call
        BotocoreStubber.__call__ = timed_stub
        self._originals = (original_call, original_stub)
        return self

    def uninstall(self) -> None:
        from botocore.client import BaseClient
        from moto.core.botocore_stubber import BotocoreStubber

        if self._originals:
            BaseClient._make_api_call, BotocoreStubber.__call__ = self._originals
            self._originals = None

    def take(self) -> tuple[Counter, float, float]:
        """(counts, SDK CPU including moto, moto CPU) since the last take."""
        taken = (self.counts, self.sdk_cpu, self.moto_cpu)
        self.counts, self.sdk_cpu, self.moto_cpu = Counter(), 0.0, 0.0
        return taken


def dynamodb_requests(counts: Counter) -> dict[str, int]:
    return {operation: n for (service, operation), n in counts.items() if service == "dynamodb"}


def median(values) -> float:
    return statistics.median(values) if values else 0.0


def percentile(values, fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def lighten_moto() -> None:
    """What moto in-process costs beyond what AWS would do, cut down where it
    makes the benchmarks quadratic (the same answers to every request):
    infra/local/moto_light.py, which the local stage's moto server uses too."""
    from infra.local.moto_light import lighten

    lighten()
