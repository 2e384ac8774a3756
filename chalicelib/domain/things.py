"""The AWS IoT thing name of a device: the one home of the naming rule.

A device publishes its counters on `billing/<merchant_id>/<device_id>/counters`
and connects with its thing name as MQTT client id (the device policy,
`DevicePolicy` in infra/aws/resources.yaml). Thing names are unique per AWS
account, device ids only per merchant, and a device id may hold `.`, which
a thing name may not (thing names: `[a-zA-Z0-9:_-]{1,128}`; device ids:
`[A-Za-z0-9_.:-]{1,64}`). So the name is

    <merchant_id>-<the first 32 hex digits of SHA-256(device_id)>

(63 characters). The merchant id (`mer_` and 26 lowercase letters and digits)
has a fixed length and no `-`, so the name starts with exactly one merchant:
two merchants' devices never share a name. Within a merchant, two device ids
share a name only if their SHA-256 agree on 128 bits, which no fleet will
ever see (a collision is expected after about 2^64 device ids). An escape of
`.` instead would be exactly injective but does not fit: every character of
a 64-character device id may be one to escape, and escaping `_` too (so the
escape is unambiguous) doubles it, 30 + 1 + 128 > 128 characters.

The device id itself is kept, readable, in the thing's `device_id`
attribute (what the device policy's topic names) and the merchant in its
`merchant_id` attribute.

The IoT rules check, for every message, that the publishing client is the
thing its topic names: `IOT_SQL_THING_NAME` is this rule written in AWS IoT
SQL over the topic's levels; resources.yaml's `UsageTopicRule` (accepted)
and `UsageWrongClientRule` (to the dead-letter queue) carry it, and
tests/unit/test_thing_names.py evaluates the template's expression against
`thing_name` so the two cannot drift apart.

`python -m chalicelib.domain.things <merchant_id> <device_id>` prints the
name (docs/deploy.md, "Devices").
"""
from __future__ import annotations

import hashlib
import re
import sys

# What the topic's levels may be (the same patterns as the ingestion's,
# chalicelib/services/ingest.py; a unit test keeps them equal).
MERCHANT_ID = re.compile(r"^mer_[0-9a-z]{26}$")
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# What AWS IoT accepts as a thing name (and so as the client id it connects with).
THING_NAME = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
DIGEST_DIGITS = 32

# `thing_name` in AWS IoT SQL, over the topic `billing/<merchant>/<device>/counters`:
# topic(2) is the merchant, topic(3) the device; sha256() answers lowercase hex.
IOT_SQL_THING_NAME = f"concat(topic(2), '-', substring(lower(sha256(topic(3))), 0, {DIGEST_DIGITS}))"


def thing_name(merchant_id: str, device_id: str) -> str:
    """The thing name of `device_id` of `merchant_id` (see the module's docstring).
    ValueError for what is not a merchant id or a device id."""
    if not isinstance(merchant_id, str) or not MERCHANT_ID.match(merchant_id):
        raise ValueError(f"not a merchant id: {merchant_id!r}")
    if not isinstance(device_id, str) or not DEVICE_ID.match(device_id):
        raise ValueError(f"not a device id: {device_id!r}")
    digest = hashlib.sha256(device_id.encode("utf-8")).hexdigest()[:DIGEST_DIGITS]
    return f"{merchant_id}-{digest}"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m chalicelib.domain.things <merchant_id> <device_id>", file=sys.stderr)
        return 2
    try:
        print(thing_name(*argv))
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
