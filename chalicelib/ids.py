"""Opaque, time-sortable ids with a type prefix (`mer_`, `cus_`, `sub_` ...)."""
from ulid import ULID


def new_id(prefix: str) -> str:
    return f"{prefix}_{str(ULID()).lower()}"
