"""The pure billing domain: money, periods, the catalog, rating and invoice totals.

Nothing here reads the clock, touches AWS or Stripe, or does I/O: every
function is plain arithmetic on its arguments, so it is tested with plain
numbers (tests/unit) and measured without a network (tests/bench).
"""
