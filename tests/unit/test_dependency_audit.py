"""The dependency audit (tests/dependency_audit/run.py, `make audit-deps`): its matching of
versions to advisories, the database it falls back on, the pins check."""
from __future__ import annotations

from tests.dependency_audit import run as audit


def entry(ranges=(), versions=()) -> dict:
    return {"id": "PYSEC-0000-1", "aliases": [], "package": "pkg", "ranges": list(ranges),
            "versions": list(versions), "summary": ""}


def test_ranges_and_versions_of_an_advisory():
    fixed = entry([[{"introduced": "0"}, {"fixed": "2.31.0"}]])
    assert audit.affects(fixed, "2.30.9") and not audit.affects(fixed, "2.31.0")
    window = entry([[{"introduced": "1.2"}, {"fixed": "1.4"}, {"introduced": "2.0"}, {"last_affected": "2.1"}]])
    assert [audit.affects(window, v) for v in ("1.1", "1.2", "1.3.9", "1.4", "2.0.5", "2.1", "2.1.1")] == [
        False, True, True, False, True, True, False]
    open_ended = entry([[{"introduced": "3.0"}]])
    assert audit.affects(open_ended, "9.9") and not audit.affects(open_ended, "2.9")
    assert audit.affects(entry(versions=["0.5"]), "0.5")
    # A range given as commits (GIT events kept as ECOSYSTEM by some entries) matches nothing.
    assert not audit.affects(entry([[{"introduced": "0"}, {"fixed": "43a9c9bfa6aa626ec2a22540bea28d2ca77964be"}]]),
                             "1.0")


def test_the_offline_database_knows_old_vulnerabilities():
    database = audit.load_database()
    assert database["commit"] and len(database["advisories"]) > 2000
    found = audit.offline_findings({"requests": "2.19.1", "pip": "23.2.1", "jinja2": "3.1.6"}, database)
    ids = {(f["package"], alias) for f in found for alias in f["aliases"]}
    assert ("requests", "CVE-2018-18074") in ids and ("pip", "CVE-2023-5752") in ids
    assert not [f for f in found if f["package"] == "jinja2"]


def test_every_requirement_is_pinned_and_a_pin_not_installed_is_reported(tmp_path):
    pinned = audit.pins()
    assert pinned["pip-audit"] and pinned["stripe"] and pinned["moto"]
    assert audit.unlocked({"stripe": "0.0.1"}, {"stripe": "16.1.0"}) == [
        "stripe==0.0.1 is pinned, 16.1.0 is installed"]
    loose = tmp_path / "requirements.txt"
    loose.write_text("requests>=2\n")
    try:
        audit.pins([loose])
    except SystemExit as error:
        assert "not pinned" in str(error)
    else:
        raise AssertionError("a requirement without a pin was accepted")
