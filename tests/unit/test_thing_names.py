"""The thing name of a device (chalicelib/domain/things.py): always a valid
AWS IoT thing name, never shared by two devices, and computed alike by the
IoT rules of infra/aws/resources.yaml (their IoT SQL, evaluated here as AWS
IoT documents its functions) and by Python."""
from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain import things
from chalicelib.domain.things import IOT_SQL_THING_NAME, THING_NAME, thing_name
from infra.local.provision import load_template

merchant_ids = st.from_regex(r"\Amer_[0-9a-z]{26}\Z")
device_ids = st.from_regex(r"\A[A-Za-z0-9_.:-]{1,64}\Z")
devices = st.tuples(merchant_ids, device_ids)


@settings(max_examples=500)
@given(devices)
def test_a_thing_name_is_always_one_aws_iot_accepts(device):
    name = thing_name(*device)
    assert THING_NAME.match(name) and len(name) <= 128
    assert "." not in name and "/" not in name and "+" not in name and "#" not in name


@settings(max_examples=500)
@given(devices, devices)
def test_two_devices_never_share_a_thing_name(one, other):
    assert (thing_name(*one) == thing_name(*other)) == (one == other)


@settings(max_examples=300)
@given(merchant_ids, merchant_ids, device_ids)
def test_the_same_device_id_of_two_merchants_makes_two_things(merchant, other_merchant, device_id):
    if merchant != other_merchant:
        assert thing_name(merchant, device_id) != thing_name(other_merchant, device_id)


@settings(max_examples=300)
@given(devices)
def test_the_name_gives_back_its_merchant_and_the_digest_of_its_device(device):
    merchant_id, device_id = device
    prefix, digest = thing_name(*device).rsplit("-", 1)
    assert prefix == merchant_id and digest == hashlib.sha256(device_id.encode()).hexdigest()[:32]


def test_dots_and_colons_that_a_thing_name_refuses_are_hashed_away():
    merchant = "mer_01jdf7k3m4n5p6q7r8s9t0v1w2"
    names = {thing_name(merchant, device) for device in ("a.b", "a_b", "a-b", "a:b", "ab", "a..b", "A.B")}
    assert len(names) == 7
    assert thing_name(merchant, "neksia-0042") == "mer_01jdf7k3m4n5p6q7r8s9t0v1w2-" + hashlib.sha256(
        b"neksia-0042").hexdigest()[:32]
    assert len(thing_name(merchant, "x" * 64)) == 63


@pytest.mark.parametrize("merchant_id, device_id", [
    ("mer_short", "d"), ("mer_01JDF7K3M4N5P6Q7R8S9T0V1W2", "d"), ("mer_01jdf7k3m4n5p6q7r8s9t0v1w2-x", "d"),
    ("mer_01jdf7k3m4n5p6q7r8s9t0v1w2", ""), ("mer_01jdf7k3m4n5p6q7r8s9t0v1w2", "a/b"),
    ("mer_01jdf7k3m4n5p6q7r8s9t0v1w2", "x" * 65), ("mer_01jdf7k3m4n5p6q7r8s9t0v1w2", "+"), (None, "d"),
])
def test_what_is_not_a_merchant_or_a_device_has_no_thing_name(merchant_id, device_id):
    with pytest.raises(ValueError):
        thing_name(merchant_id, device_id)


def test_the_rule_reads_the_ids_as_the_ingestion_does():
    from chalicelib.services import ingest

    assert things.MERCHANT_ID.pattern == ingest.MERCHANT_ID.pattern
    assert things.DEVICE_ID.pattern == ingest.DEVICE_ID.pattern


def test_the_command_prints_the_name(capsys):
    assert things.main(["mer_01jdf7k3m4n5p6q7r8s9t0v1w2", "neksia.0042"]) == 0
    assert capsys.readouterr().out.strip() == thing_name("mer_01jdf7k3m4n5p6q7r8s9t0v1w2", "neksia.0042")
    assert things.main(["mer_x", "d"]) == 2


# -- the same rule in the IoT rules' SQL --------------------------------------------


_TOKEN = re.compile(r"\s*(?:(?P<name>[a-z_][a-z0-9_]*)|(?P<number>-?\d+)|'(?P<single>[^']*)'|\"(?P<double>[^\"]*)\""
                    r"|(?P<punct>[(),]))")


def iot_sql(expression: str, topic: str) -> str:
    """Evaluate an IoT SQL expression made of literals and the functions
    the naming rule uses, as AWS IoT's SQL reference defines them:
    `topic(n)` (1-based level), `concat` (string concatenation), `lower`,
    `sha256` (lowercase hex of the UTF-8 string), `substring(s, start[, end])`
    (0-based, end exclusive, indices clamped to the string)."""
    tokens = []
    position = 0
    while position < len(expression.rstrip()):
        match = _TOKEN.match(expression, position)
        assert match, f"not understood at {expression[position:]!r}"
        tokens.append(next((kind, value) for kind, value in match.groupdict().items() if value is not None))
        position = match.end()

    def substring(text, start, end=None):
        length = len(text)
        start = min(max(int(start), 0), length)
        end = length if end is None else min(max(int(end), 0), length)
        return text[start:end] if start < end else ""

    functions = {
        "topic": lambda n=None: topic if n is None else topic.split("/")[int(n) - 1],
        "concat": lambda *parts: "".join(str(p) for p in parts),
        "lower": lambda text: text.lower(),
        "sha256": lambda text: hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "substring": substring,
    }

    def parse(i: int):
        kind, value = tokens[i]
        if kind in ("single", "double"):
            return value, i + 1
        if kind == "number":
            return int(value), i + 1
        assert kind == "name" and tokens[i + 1] == ("punct", "("), f"unexpected {value!r}"
        arguments, i = [], i + 2
        while tokens[i] != ("punct", ")"):
            argument, i = parse(i)
            arguments.append(argument)
            if tokens[i] == ("punct", ","):
                i += 1
        return functions[value](*arguments), i + 1

    result, end = parse(0)
    assert end == len(tokens), f"trailing tokens in {expression!r}"
    return result


def rule_sql(logical_id: str) -> str:
    return load_template()["Resources"][logical_id]["Properties"]["TopicRulePayload"]["Sql"]


def where(sql: str, operator: str) -> str:
    match = re.fullmatch(rf".* FROM 'billing/\+/\+/counters' WHERE clientid\(\) {operator} (.+)", sql)
    assert match, sql
    return match.group(1)


def test_the_evaluator_follows_aws_iot_examples():
    assert iot_sql("substring('012345', 1, 3)", "t") == "12"
    assert iot_sql("substring('012345', -50, 50)", "t") == "012345"
    assert iot_sql("substring('012345', 3, 1)", "t") == ""
    assert iot_sql("concat('he', 'is', 'man')", "t") == "heisman"
    assert iot_sql("topic(1)", "things/myThings/thingOne") == "things"


@pytest.mark.parametrize("device_id", ["neksia-0042", "neksia.0042", "a", "A.B:c_d-e", "." * 64, "x" * 64])
def test_the_rules_compute_the_thing_name_as_python_does(device_id):
    merchant_id = "mer_01jdf7k3m4n5p6q7r8s9t0v1w2"
    topic = f"billing/{merchant_id}/{device_id}/counters"
    accepted = where(rule_sql("UsageTopicRule"), "=")
    refused = where(rule_sql("UsageWrongClientRule"), "<>")
    # One expression, the one of things.py, on both sides of the partition.
    assert accepted == refused == IOT_SQL_THING_NAME
    assert iot_sql(accepted, topic) == thing_name(merchant_id, device_id)


@settings(max_examples=200)
@given(devices)
def test_the_rules_and_python_agree_on_any_device(device):
    merchant_id, device_id = device
    topic = f"billing/{merchant_id}/{device_id}/counters"
    assert iot_sql(IOT_SQL_THING_NAME, topic) == thing_name(merchant_id, device_id)
