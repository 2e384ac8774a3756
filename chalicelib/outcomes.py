"""Outcomes one part of billing reports and another acts on, with no
import between them: collecting reports a failed charge, a subscription's
change is reported once saved, ingestion reports a counter that went back;
the alerts act on them (services/alerts.py).

The wiring is this table, by name, resolved when an outcome is reported:
whichever Lambda reports an outcome (the API, the billing worker, the
ingestion) reaches its listeners without having imported them, and the
reporting module depends on nothing but this one. A listener must not
raise for its own delivery problems (the alerts record and queue, and
never fail the change that told them).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

LISTENERS: dict[str, tuple[str, ...]] = {
    # (the API's invoice object, merchant id)
    "payment_failed": ("chalicelib.services.alerts:payment_failed",),
    # (subscription record, the change's type)
    "subscription_changed": ("chalicelib.services.alerts:subscription_changed",
                             "chalicelib.services.devices:subscription_changed"),
    # (merchant id, device id, subscription id, customer id, the reset)
    "counter_reset": ("chalicelib.services.alerts:counter_reset",),
}


def report(outcome: str, *facts) -> None:
    """Tell every listener of `outcome` (a key of LISTENERS) the `facts`."""
    for listener in _listeners(outcome):
        listener(*facts)


def _listeners(outcome: str) -> list[Callable]:
    found = []
    for target in LISTENERS[outcome]:
        module, name = target.split(":")
        found.append(getattr(importlib.import_module(module), name))
    return found
