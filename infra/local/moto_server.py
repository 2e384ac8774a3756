"""moto's server for the local stage, with the billing table's stream kept cheap.

moto deep-copies a table before each transaction (to roll it back), its
stream records included: with the stream on, every transaction would cost as
much as every change made before it, and a local stage left running would
slow down by the hour. Stream records are never changed once written, so
the copy of a shard needs only a copy of its list. The in-process moto of
the tests applies the same fix (`cheap_stream_copies`). The server is also
lightened as the benchmarks' moto is (infra/local/moto_light.py): a
transaction copies only the items it names, not the whole table.

`python -m infra.local.moto_server -H 127.0.0.1 -p 5000` (moto.server's flags);
with `--state-file PATH`, the state is kept across a restart of the process
(infra/local/moto_state.py).
"""
from __future__ import annotations

import copy
import sys


def cheap_stream_copies() -> None:
    from moto.dynamodb.models.table import StreamShard

    def shard_copy(shard, memo):
        copied = copy.copy(shard)
        copied.items = list(shard.items)
        return copied

    StreamShard.__deepcopy__ = shard_copy


def quick_dispatch() -> None:
    """moto's server finds the service of every request by listing moto's
    package directory (`list_of_moto_modules`: a few hundred `stat` calls)
    and trying every service's URL patterns, under one lock that every
    request waits for: under load that was most of its time. Both answers
    depend only on the installed moto and the request's host, so they are
    worked out once."""
    from moto import backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    original = DomainDispatcherApplication.get_backend_for_host
    known: dict = {}

    def get_backend_for_host(self, host):
        if host not in known:
            known[host] = original(self, host)
        return known[host]

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host


def atomic_dynamodb() -> None:
    """One DynamoDB request at a time, as DynamoDB applies each request (a
    transaction above all) atomically and in isolation.

    moto's server answers requests on threads, and its DynamoDB has no lock:
    a transaction checks its conditions and then writes, so two at once can
    both find the merchant's invoice counter at n-1 and both take number n,
    and a cancelled one puts back what it had changed over a write made by
    another meanwhile. Under the load run's concurrency (the billing run, the
    ingestion, the report feed, the API at once) that gave an invoice number
    twice. The backends' requests are serialised by one lock here; they were
    already serialised by the interpreter's, so nothing is slower."""
    import functools
    import inspect
    import threading

    from moto.dynamodb.models import DynamoDBBackend

    if getattr(DynamoDBBackend, "_atomic", False):
        return
    lock = threading.RLock()

    def serialised(method):
        @functools.wraps(method)
        def call(*args, **kwargs):
            with lock:
                return method(*args, **kwargs)

        return call

    for name, member in list(vars(DynamoDBBackend).items()):
        if not name.startswith("_") and inspect.isfunction(member):
            setattr(DynamoDBBackend, name, serialised(member))
    DynamoDBBackend._atomic = True


def cheap_queue_clock() -> None:
    """moto's SQS reads the time, through two datetime conversions, for every
    message of a queue on every send and receive (is it visible, is it
    delayed): the same instant, in milliseconds since the epoch, is read
    directly."""
    import time

    from moto.sqs import models

    original = models.unix_time_millis

    def unix_time_millis(dt=None):
        return time.time() * 1000.0 if dt is None else original(dt)

    models.unix_time_millis = unix_time_millis


def main(argv: list[str] | None = None) -> None:
    import logging

    # A line per request in moto.log costs more than some requests do.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    cheap_stream_copies()
    quick_dispatch()
    cheap_queue_clock()
    atomic_dynamodb()
    from infra.local.moto_light import lighten

    lighten()
    argv = list(argv if argv is not None else sys.argv[1:])
    if "--state-file" in argv:
        import argparse

        from infra.local.moto_state import serve

        parser = argparse.ArgumentParser()
        parser.add_argument("-H", "--host", default="127.0.0.1")
        parser.add_argument("-p", "--port", type=int, default=5000)
        parser.add_argument("--state-file", required=True)
        args = parser.parse_args(argv)
        serve(args.host, args.port, args.state_file)
        return
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main()
