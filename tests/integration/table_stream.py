"""The billing table's DynamoDB stream (moto in-process), delivered to
`report_feed` as Lambda delivers it (infra/local/streams.py)."""
from __future__ import annotations

import os

from infra.local.moto_server import cheap_stream_copies
from infra.local.streams import TableStream


# moto copies a table before each transaction, stream records included:
# cheaply, as on the local stage.
cheap_stream_copies()


def billing_table_stream() -> TableStream:
    return TableStream(os.environ["TABLE_NAME"])
