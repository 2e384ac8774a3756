"""The dependency audit (`make audit-deps`, run by `make test`): tests/dependency_audit/run.py."""
