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
    `item_scoped_moto_transactions` and `scalar_moto_comparisons`."""
    item_scoped_moto_transactions()
    scalar_moto_comparisons()
    sorted_items_kept()


def sorted_items_kept() -> None:
    """Sort a moto table's items once per change of its item set, not once
    per query on an index (`Table.all_items`).

    The order is by primary key, which an item never changes, and the list
    holds the items themselves, which updates change in place: only adding
    or removing an item (`put_item`, `delete_item`, a cancelled transaction
    put back by `item_scoped_moto_transactions`) changes the list, and each
    of those counts a new generation of the table."""
    from moto.dynamodb.models.table import Table

    if getattr(Table.all_items, "kept", False):
        return
    original_all_items, original_put, original_delete = Table.all_items, Table.put_item, Table.delete_item

    def changed(table) -> None:
        table.__dict__["_generation"] = table.__dict__.get("_generation", 0) + 1

    # The generation moves after the change: a list sorted meanwhile (by
    # another thread) is then of the generation before, and is sorted again.
    def put_item(self, *args, **kwargs):
        try:
            return original_put(self, *args, **kwargs)
        finally:
            changed(self)

    def delete_item(self, *args, **kwargs):
        try:
            return original_delete(self, *args, **kwargs)
        finally:
            changed(self)

    def all_items(self):
        generation = self.__dict__.get("_generation", 0)
        kept = self.__dict__.get("_sorted_items")
        if kept is None or kept[0] != generation:
            kept = (generation, original_all_items(self))
            self.__dict__["_sorted_items"] = kept
        return list(kept[1])

    all_items.kept = True
    Table.all_items, Table.put_item, Table.delete_item = all_items, put_item, delete_item


def scalar_moto_comparisons() -> None:
    """Compare moto's string and binary attribute values directly.

    A query on an index makes moto sort every item of the table by its keys
    (`Table.all_items`) and compare the key of each with the one asked for;
    each comparison of two `DynamoType`s converts both through `cast_value`
    (five type tests, then the value itself for a string). With thousands of
    items that was most of a billing benchmark's time. For two strings (or
    two binaries) the comparison is the values' own, which is what
    `cast_value` returns for them; every other case is moto's."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    if getattr(DynamoType.__eq__, "scalar", False):
        return
    original_eq, original_ne, original_lt = DynamoType.__eq__, DynamoType.__ne__, DynamoType.__lt__
    scalar = ("S", "B")

    def __eq__(self, other):
        if self.type in scalar and isinstance(other, DynamoType):
            return self.type == other.type and self.value == other.value
        return original_eq(self, other)

    def __ne__(self, other):
        if self.type in scalar and isinstance(other, DynamoType):
            return self.type != other.type or self.value != other.value
        return original_ne(self, other)

    def __lt__(self, other):
        if self.type in scalar and isinstance(other, DynamoType) and other.type == self.type:
            return self.value < other.value
        return original_lt(self, other)

    __eq__.scalar = True
    DynamoType.__eq__, DynamoType.__ne__, DynamoType.__lt__ = __eq__, __ne__, __lt__
    # Set after the class was made, __eq__ leaves moto's __hash__ in place:
    # (type, cast_value), for a string or a binary (type, value), as above.


def item_scoped_moto_transactions() -> None:
    """Make moto's TransactWriteItems cost what the transaction touches.

    To roll back a cancelled transaction, moto deep-copies every table the
    transaction names, whole, before applying it: O(table) per transaction,
    which makes a benchmark with thousands of items quadratic (1.2 s a
    transaction with a few hundred devices) and was most of the benchmarks'
    wall time. Here the items the transaction names are copied instead, and
    put back if it is cancelled: the same outcome for every transaction (a
    transaction only writes the items it names). Moto's time is excluded
    from our CPU figures either way; this only makes `make bench` fit its
    time budget."""
    import copy

    from moto.dynamodb import models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    if getattr(models.DynamoDBBackend.transact_write_items, "item_scoped", False):
        return

    class _NoTableCopy:
        @staticmethod
        def deepcopy(value, memo=None):
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        snapshots = []
        for entry in transact_items:
            _, operation = next(iter(entry.items()))
            table = self.tables.get(operation.get("TableName"))
            if table is None:
                continue
            key = operation.get("Key") or operation.get("Item") or {}
            if table.hash_key_attr not in key:
                continue
            hash_key = DynamoType(key[table.hash_key_attr])
            range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr in key else None
            if table.has_range_key:
                item = table.items[hash_key].get(range_key) if hash_key in table.items else None
            else:
                item = table.items.get(hash_key)
            snapshots.append((table, hash_key, range_key, copy.deepcopy(item)))
        models.copy = _NoTableCopy
        try:
            return original(self, transact_items)
        except Exception:
            for table, hash_key, range_key, item in reversed(snapshots):
                if table.has_range_key:
                    if item is None:
                        table.items.get(hash_key, {}).pop(range_key, None)
                    else:
                        table.items[hash_key][range_key] = item
                elif item is None:
                    table.items.pop(hash_key, None)
                else:
                    table.items[hash_key] = item
                # The item put back is another object (sorted_items_kept).
                table.__dict__["_generation"] = table.__dict__.get("_generation", 0) + 1
            raise
        finally:
            models.copy = copy

    transact_write_items.item_scoped = True
    models.DynamoDBBackend.transact_write_items = transact_write_items
