"""The shape of the code (docs/architecture.md), read from the sources:
no import cycle among the services (function-level imports included), no
call into another module's private names, DynamoDB reached only from
store/, Stripe only from payments.py, SQS only from queues.py, and no
file of 700 lines or more."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "chalicelib").rglob("*.py")) + [ROOT / "app.py"]


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports(tree: ast.AST) -> dict[str, str]:
    """Local name -> chalicelib module, for every import in the file (nested ones too)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("chalicelib"):
                    names[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chalicelib"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names[alias.asname or alias.name] = full if is_module(full) else node.module
    return names


PARSED = {module_of(path): (path, ast.parse(path.read_text())) for path in SOURCES}
IMPORTS = {module: imports(tree) for module, (_, tree) in PARSED.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        for dep in sorted(graph.get(node, ())):
            if dep in path:
                found.append(path[path.index(dep):] + [dep])
            elif len(path) < 12:
                walk(dep, path + [dep])

    for start in sorted(graph):
        walk(start, [start])
    return found


def cycles(prefix: str) -> list[list[str]]:
    return find_cycles({m: {d for d in deps.values() if d.startswith(prefix) and d != m}
                        for m, deps in IMPORTS.items() if m.startswith(prefix)})


def test_no_import_cycle_among_the_services():
    assert cycles("chalicelib.services.") == []


def test_no_import_cycle_among_the_stores_and_the_domain():
    assert cycles("chalicelib.store.") == []
    assert cycles("chalicelib.domain.") == []


def test_the_domain_imports_nothing_but_the_domain():
    for module, deps in IMPORTS.items():
        if module.startswith("chalicelib.domain."):
            assert all(d.startswith("chalicelib.domain") for d in deps.values()), (module, deps)


def test_no_module_calls_another_modules_private_names():
    calls = []
    for module, (_, tree) in PARSED.items():
        names = IMPORTS[module]
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in names
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                calls.append(f"{module}:{node.lineno} {names[node.value.id]}.{node.attr}")
    assert calls == []


def clients_named(tree: ast.AST) -> set[str]:
    """The AWS services a file asks chalicelib.aws (or boto3) a client of."""
    found = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "client"
                and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(node.args[0].value)
    return found


def test_dynamodb_only_from_the_stores():
    # The idempotency layer (api/http.py) hands its client to Powertools, which makes the requests.
    allowed = {"chalicelib.api.http"}
    for module, (_, tree) in PARSED.items():
        if module.startswith("chalicelib.store.") or module in allowed:
            continue
        assert "dynamodb" not in clients_named(tree), module
        assert "chalicelib.store.dynamo" not in IMPORTS[module].values(), module
        assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) and "pynamodb" in ast.unparse(n)
                       for n in ast.walk(tree)), module


def test_sqs_only_through_queues_and_stripe_only_through_payments():
    for module, (path, tree) in PARSED.items():
        if module != "chalicelib.queues":
            assert "sqs" not in clients_named(tree), module
        if module != "chalicelib.payments":
            assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) and ast.unparse(n).split()[1] == "stripe"
                           for n in ast.walk(tree)), module


# Outbound HTTP to merchants' receivers goes through one gateway, where its
# checks live (webhook_sender.py: public addresses only, pinned, no redirect).
OUTBOUND_HTTP = {"http.client", "urllib.request", "socket", "requests", "urllib3", "httpx"}
# The local stage's moto snapshot reads moto's own server (never deployed).
OUTBOUND_HTTP_ALLOWED = {"chalicelib.webhook_sender", "chalicelib.api.local"}


def outbound_http_imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in OUTBOUND_HTTP}
        elif isinstance(node, ast.ImportFrom) and node.module in OUTBOUND_HTTP:
            found.add(node.module)
    return found


def test_outbound_http_only_through_the_webhook_sender():
    for module, (_, tree) in PARSED.items():
        if module not in OUTBOUND_HTTP_ALLOWED:
            assert outbound_http_imports(tree) == set(), module
    assert outbound_http_imports(ast.parse("import socket\nfrom http.client import HTTPConnection\n")) == {
        "socket", "http.client"}


def test_every_file_stays_under_700_lines():
    long = {module: len(path.read_text().splitlines()) for module, (path, _) in PARSED.items()}
    assert {m: n for m, n in long.items() if n >= 700} == {}


def test_these_checks_see_what_they_look_for():
    """A cycle, a private call and a client are found when present."""
    tree = ast.parse("from chalicelib.services import collecting\ncollecting._conclude(1)\naws.client('sqs')\n")
    assert imports(tree) == {"collecting": "chalicelib.services.collecting"}
    assert clients_named(tree) == {"sqs"}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})[0] == ["a", "b", "c", "a"]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
