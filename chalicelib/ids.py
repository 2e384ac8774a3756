"""Opaque, time-sortable ids with a type prefix (`mer_`, `cus_`, `sub_` ...)."""
import hashlib
from datetime import datetime

from ulid import ULID


def new_id(prefix: str) -> str:
    return f"{prefix}_{str(ULID()).lower()}"


def derived_id(prefix: str, at: datetime, seed: str) -> str:
    """The id of something that may be made twice and must be one thing:
    ULID-shaped (48-bit milliseconds of `at`, then 80 bits of a hash of
    `seed`), so the same `seed` names the same id and ids still sort by time."""
    millis = int(at.timestamp() * 1000)
    digest = hashlib.sha256(seed.encode()).digest()
    return f"{prefix}_{str(ULID.from_bytes(millis.to_bytes(6, 'big') + digest[:10])).lower()}"
