"""moto's server for the local stage, with the billing table's stream kept cheap.

moto deep-copies a table before each transaction (to roll it back), its
stream records included: with the stream on, every transaction would cost as
much as every change made before it, and a local stage left running would
slow down by the hour. Stream records are never changed once written, so
the copy of a shard needs only a copy of its list. The in-process moto of
the tests applies the same fix (`cheap_stream_copies`).

`python -m infra.local.moto_server -H 127.0.0.1 -p 5000` (moto.server's flags).
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


def main(argv: list[str] | None = None) -> None:
    cheap_stream_copies()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
