"""What moto costs beyond what AWS would do, cut down where it makes a long
run quadratic in the number of items: the same answers to every request.

moto deep-copies every table a transaction names (to roll back a cancelled
one), and sorts a table's every item, comparing keys through several type
tests each, on every query of an index. With thousands of items that was
most of the benchmarks' time, and on the local stage it made every reading
cost a copy of the whole table (the report feed writes one transaction per
change it counts): a stage slowed down by the hour. `lighten()` installs the
three fixes; the local stage's moto server (infra/local/moto_server.py) and
the benchmarks' moto in-process (tests/bench/harness.py) both use it, and
tests/integration/test_benchmarks.py checks the answers are the same.
"""
from __future__ import annotations


def lighten() -> None:
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
