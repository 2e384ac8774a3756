"""HTTP routes: one Chalice blueprint per resource. Each view parses and
validates its input, calls one service, and returns what it serialized."""
