"""Load and crash runs against the local stage (`make load`, `make crash`):
the tools, run in full by those targets and in short by tests/e2e."""
