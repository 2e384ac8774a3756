"""Known vulnerabilities in what the locked requirements install.

    make audit-deps                    (run by `make test`, so by CI)
    python -m tests.dependency_audit.run [--offline]
    python -m tests.dependency_audit.run --refresh <checkout of github.com/pypa/advisory-database>

What is audited: every distribution of the environment `make install` built
from requirements.txt and requirements-dev.txt (their pins and everything
those pull in, pip and setuptools included); first it checks that each pin of
the two files is what is installed, so the audit is of the locked versions.

Against what:
1. pip-audit (pinned in requirements-dev.txt), asking PyPI for each
   installed version's known vulnerabilities; a package PyPI cannot answer
   for (no network, a registry mirror without PyPI's JSON API) is audited
   by 2 instead, and the report says so;
2. offline, `advisories.json.gz` beside this file: every advisory of the
   PyPA advisory database (the source PyPI and OSV publish for PyPI
   packages; its snapshot's commit and date are in the file), reduced to
   what a match needs (ids, aliases, package, affected ranges and versions).
   `--refresh` rebuilds it from a newer checkout.

A vulnerability fails the audit unless ACCEPTED below names it with the
reason it does not apply. Exit 1 on a finding or a pin not installed.
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ADVISORIES = HERE / "advisories.json.gz"
REQUIREMENTS = (ROOT / "requirements.txt", ROOT / "requirements-dev.txt")

# Vulnerability id (or alias) -> why it does not apply here. Empty: nothing
# known is accepted.
ACCEPTED: dict[str, str] = {}


def installed() -> dict[str, str]:
    """Canonical name -> version of every distribution of this environment."""
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def pins(paths=REQUIREMENTS) -> dict[str, str]:
    """Canonical name -> pinned version of the requirement files (`-r` followed)."""
    found: dict[str, str] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-r "):
                continue
            match = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
            if not match:
                raise SystemExit(f"{path.name}: {line!r} is not pinned (name==version)")
            found[canonicalize_name(match.group(1))] = match.group(3)
    return found


def unlocked(pinned: dict[str, str], present: dict[str, str]) -> list[str]:
    return [f"{name}=={version} is pinned, {present.get(name, 'nothing')} is installed"
            for name, version in sorted(pinned.items()) if present.get(name) != version]


# -- the offline database ----------------------------------------------------------


def refresh(checkout: Path) -> dict:
    """The compact database from a checkout of pypa/advisory-database."""
    import yaml

    entries = []
    for path in sorted((checkout / "vulns").glob("*/*.yaml")):
        advisory = yaml.safe_load(path.read_text())
        if advisory.get("withdrawn"):
            continue
        for affected in advisory.get("affected", []):
            package = affected.get("package", {})
            if package.get("ecosystem") != "PyPI":
                continue
            entries.append({
                "id": advisory["id"], "aliases": advisory.get("aliases") or [],
                "package": canonicalize_name(package["name"]),
                "ranges": [r["events"] for r in affected.get("ranges", []) if r.get("type") == "ECOSYSTEM"],
                "versions": [str(v) for v in affected.get("versions", [])],
                "summary": (advisory.get("summary") or advisory.get("details") or "").strip().split("\n")[0][:200],
            })
    try:
        commit = subprocess.run(["git", "-C", str(checkout), "log", "-1", "--format=%H %cI"], capture_output=True,
                                text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        commit = ["unknown", "unknown"]
    return {"source": "https://github.com/pypa/advisory-database", "commit": commit[0], "date": commit[1],
            "advisories": entries}


def load_database(path: Path = ADVISORIES) -> dict:
    with gzip.open(path, "rt") as f:
        return json.load(f)


def affects(entry: dict, version: str) -> bool:
    """Whether an advisory's affected ranges (OSV ECOSYSTEM events:
    introduced / fixed / last_affected) or listed versions hold `version`."""
    if version in entry["versions"]:
        return True
    try:
        v = Version(version)
    except InvalidVersion:
        return False
    for events in entry["ranges"]:
        low = None
        for event in events:
            try:
                if "introduced" in event:
                    low = Version("0") if event["introduced"] == "0" else Version(event["introduced"])
                elif "fixed" in event and low is not None:
                    if low <= v < Version(event["fixed"]):
                        return True
                    low = None
                elif "last_affected" in event and low is not None:
                    if low <= v <= Version(event["last_affected"]):
                        return True
                    low = None
            except InvalidVersion:  # a range given as a commit, not a version
                low = None
        if low is not None and v >= low:
            return True
    return False


def offline_findings(present: dict[str, str], database: dict) -> list[dict]:
    found = []
    for entry in database["advisories"]:
        version = present.get(entry["package"])
        if version is not None and affects(entry, version):
            found.append({"package": entry["package"], "version": version, "id": entry["id"],
                          "aliases": entry["aliases"], "summary": entry["summary"], "source": "advisories.json.gz"})
    return found


# -- pip-audit -----------------------------------------------------------------------


def pip_audit() -> tuple[list[dict], set[str]]:
    """pip-audit over this environment, against PyPI: (findings, the
    packages it could not audit)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        try:
            subprocess.run([sys.executable, "-m", "pip_audit", "-s", "pypi", "-f", "json", "-o", str(out),
                            "--progress-spinner", "off", "--timeout", "10"], capture_output=True, text=True,
                           timeout=600)
        except (OSError, subprocess.TimeoutExpired):
            return [], set(installed())
        if not out.exists():
            return [], set(installed())
        report = json.loads(out.read_text())
    findings, skipped = [], set()
    for dependency in report.get("dependencies", []):
        name = canonicalize_name(dependency["name"])
        if dependency.get("skip_reason"):
            skipped.add(name)
        for vuln in dependency.get("vulns", []):
            findings.append({"package": name, "version": dependency.get("version"), "id": vuln["id"],
                             "aliases": vuln.get("aliases", []), "summary": (vuln.get("description") or "")[:200],
                             "fix_versions": vuln.get("fix_versions", []), "source": "pip-audit (PyPI)"})
    return findings, skipped


def audit(offline: bool = False) -> dict:
    present = installed()
    problems = unlocked(pins(), present)
    findings, skipped = ([], set(present)) if offline else pip_audit()
    database = load_database()
    if skipped:
        findings += offline_findings({n: v for n, v in present.items() if n in skipped}, database)
    accepted = [f for f in findings if {f["id"], *f["aliases"]} & set(ACCEPTED)]
    failing = [f for f in findings if f not in accepted]
    problems += [f"{f['package']} {f['version']}: {f['id']} {' '.join(f['aliases'])} {f['summary']}"
                 for f in failing]
    return {
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "packages": len(present),
        "audited_by_pip_audit": len(present) - len(skipped),
        "audited_offline": len(skipped),
        "offline_database": {"commit": database["commit"], "date": database["date"],
                             "advisories": len(database["advisories"])},
        "findings": failing,
        "accepted": [{**f, "reason": ACCEPTED.get(f["id"]) or next(ACCEPTED[a] for a in f["aliases"] if a in ACCEPTED)}
                     for f in accepted],
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offline", action="store_true", help="only the offline database (no pip-audit)")
    parser.add_argument("--refresh", type=Path, metavar="CHECKOUT",
                        help="rebuild advisories.json.gz from a checkout of pypa/advisory-database")
    args = parser.parse_args(argv)
    if args.refresh:
        database = refresh(args.refresh)
        with gzip.GzipFile(ADVISORIES, "wb", mtime=0) as f:
            f.write(json.dumps(database, sort_keys=True, separators=(",", ":")).encode())
        print(f"{len(database['advisories'])} advisories of {database['commit']} ({database['date']})")
        return 0
    report = audit(args.offline)
    print(json.dumps(report, indent=1))
    if report["problems"]:
        print("audit failed: " + "; ".join(report["problems"]), file=sys.stderr)
        return 1
    print(f"audit: {report['packages']} packages, no known vulnerability "
          f"({report['audited_by_pip_audit']} by pip-audit, {report['audited_offline']} against the PyPA "
          f"advisory database of {report['offline_database']['date'][:10]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
