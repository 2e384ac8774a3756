"""The deployment package: its size, and each function's cold import, with
and without compiled `.pyc`.

The package is what `infra/aws/package.py` builds (`make package`): this
module calls its `build()` and its `import_seconds()` (a fresh interpreter
on the package alone, no site-packages, as Lambda starts it), and measures
nothing another way. The zip is rebuilt when any file it is made of is newer
than it (or with `--rebuild`), into build/bench/ so a deploy's build/<stage>
is never touched.

Every function's handler is in app.py, so every cold start imports `app`;
then its first invocation imports what that function alone uses (chalice's
lazy imports, DESIGN.md): the API's routes are all in `app`; the queue
consumers load Powertools' batch processor and their service; the billing
worker also loads the Stripe library (chalicelib.payments imports it on the
first charge). `FIRST_CALL_IMPORTS` lists those modules per function
(tests/integration/test_benchmarks.py checks that they exist and that the
functions are app.py's).

Run: `python -m tests.bench.bench_package [--rebuild] [--runs N]`. Prints one
JSON line; `main()` returns it as a dict.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

ROOT = Path(__file__).resolve().parents[2]
STAGE = "dev"
OUT = ROOT / "build" / "bench"
TARGET_ZIP_BYTES = 15 * 1024 * 1024
TARGET_API_IMPORT_MS = 250
RUNS = 5

# Function -> modules its first invocation imports beyond `app`.
FIRST_CALL_IMPORTS = {
    "api_handler": (),
    "ingest_usage": ("aws_lambda_powertools.utilities.batch", "aws_lambda_powertools.metrics",
                     "chalicelib.services.ingest"),
    "billing_worker": ("aws_lambda_powertools.utilities.batch", "chalicelib.services.issuing", "stripe"),
    "billing_scheduler": ("chalicelib.services.issuing",),
    "dunning_scheduler": ("chalicelib.services.collecting",),
    "report_feed": ("chalicelib.services.reports",),
    "change_feed": ("chalicelib.services.audit", "chalicelib.services.domain_events"),
    "card_expiry_scan": ("chalicelib.services.alerts",),
    "send_notifications": ("aws_lambda_powertools.utilities.batch", "chalicelib.services.alerts"),
}

# What the zip is made of: newer than the zip means rebuild.
SOURCES = ("app.py", "chalicelib", "requirements.txt", "infra/aws", ".chalice/config.json", ".chalice/policies")


def newest_source() -> float:
    newest = 0.0
    for name in SOURCES:
        path = ROOT / name
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        newest = max([newest, *(p.stat().st_mtime for p in files)])
    return newest


def package(rebuild: bool = False) -> tuple[Path, dict]:
    """The deployment zip, built by infra.aws.package unless it is up to
    date; (its path, how it was obtained). A build that fails (the code
    being changed, PyPI unreachable) falls back to the last zip, and says so."""
    from infra.aws import package as packaging

    zip_path = OUT / "deployment.zip"
    if not rebuild and zip_path.exists() and zip_path.stat().st_mtime > newest_source():
        return zip_path, {"rebuilt": False, "up_to_date": True}
    started = time.perf_counter()
    try:
        packaging.build(STAGE, OUT, run_lint=False)
    except (SystemExit, Exception) as error:  # noqa: BLE001 - reported, and the last zip is measured
        if not zip_path.exists():
            raise
        return zip_path, {"rebuilt": False, "up_to_date": False, "build_error": str(error)[:500],
                          "zip_built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(zip_path.stat().st_mtime))}
    return zip_path, {"rebuilt": True, "up_to_date": True, "build_seconds": round(time.perf_counter() - started, 1)}


def functions() -> list[str]:
    """The app's Lambda functions: the API, and one per event handler."""
    from app import app

    return ["api_handler", *(source.name for source in app.event_sources)]


def contents(zip_path: Path, top: int = 8) -> list[dict]:
    """The largest top-level entries of the zip, compressed."""
    sizes: Counter = Counter()
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            name = info.filename.split("/")[0]
            sizes["*.dist-info" if name.endswith(".dist-info") else name] += info.compress_size
    return [{"entry": name, "bytes": size} for name, size in sizes.most_common(top)]


# The libraries the API imports at its cold start whatever our code does:
# the HTTP framework, request models, the DynamoDB models (and botocore
# under them), Powertools' logger. `import app` minus these is ours.
LIBRARY_FLOOR = "chalice, pydantic, pynamodb.models, pynamodb.attributes, aws_lambda_powertools.logging, boto3"


def import_cpu(tree: Path, code: str, runs: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of `code` in a fresh interpreter on the
    package alone (infra.aws.package's environment). CPU time is not
    stretched by other work on the machine as wall time is."""
    from infra.aws import package as packaging

    probe = ("import time\nw, c = time.perf_counter(), time.process_time()\n" + code
             + "\nprint(time.perf_counter() - w, time.process_time() - c)\n")
    walls, cpus = [], []
    for _ in range(runs):
        result = subprocess.run([sys.executable, "-S", "-c", probe], env=packaging.lambda_environment(STAGE, [tree]),
                                capture_output=True, text=True, check=True)
        wall, cpu = map(float, result.stdout.split())
        walls.append(wall)
        cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus)


def cold_imports(zip_path: Path, runs: int) -> dict:
    """Per function, the median wall time of `import app` and of its first
    call's imports, in a fresh interpreter, with the package's .pyc and without."""
    from infra.aws import package as packaging

    def measure(tree: Path) -> dict:
        result = {}
        app_s = packaging.import_seconds(tree, STAGE, "app", runs)
        for function in functions():
            modules = FIRST_CALL_IMPORTS.get(function, ())
            try:
                extra = packaging.import_seconds(tree, STAGE, ", ".join(modules), runs) if modules else 0.0
            except subprocess.CalledProcessError:  # a module the (older) zip does not have
                result[function] = {"app_ms": round(app_s * 1000, 1), "first_call_ms": None, "total_ms": None}
                continue
            result[function] = {"app_ms": round(app_s * 1000, 1), "first_call_ms": round(extra * 1000, 1),
                                "total_ms": round((app_s + extra) * 1000, 1)}
        return result

    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "package"
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(tree)
        compiled = measure(tree)
        app_wall, app_cpu = import_cpu(tree, "import app", runs)
        floor_wall, floor_cpu = import_cpu(tree, f"import {LIBRARY_FLOOR}", runs)
        for cache in list(tree.rglob("__pycache__")):
            shutil.rmtree(cache)
        source = measure(tree)
    result = {function: {"with_pyc": compiled[function], "without_pyc": source[function]} for function in compiled}
    result["api_handler"]["with_pyc_breakdown"] = {
        "app_wall_ms": round(app_wall * 1000, 1), "app_cpu_ms": round(app_cpu * 1000, 1),
        "libraries": LIBRARY_FLOOR, "libraries_wall_ms": round(floor_wall * 1000, 1),
        "libraries_cpu_ms": round(floor_cpu * 1000, 1),
    }
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_IMPORT_RUNS", RUNS)))
    args = parser.parse_args(argv if argv is not None else [])
    zip_path, build = package(args.rebuild)
    size = zip_path.stat().st_size
    with zipfile.ZipFile(zip_path) as archive:
        unzipped = sum(info.file_size for info in archive.infolist())
    imports = cold_imports(zip_path, args.runs)
    result = {
        "benchmark": "package",
        "zip_bytes": size,
        "unzipped_bytes": unzipped,
        "target_zip_bytes": TARGET_ZIP_BYTES,
        "largest_entries": contents(zip_path),
        "build": build,
        "functions_without_known_first_call_imports": [f for f in functions() if f not in FIRST_CALL_IMPORTS],
        "import_runs": args.runs,
        "cold_import": imports,
        "target_api_import_ms": TARGET_API_IMPORT_MS,
        "python": sys.version.split()[0],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
