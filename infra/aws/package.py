"""Build what a stage deploys: `build/<stage>/template.yaml` (SAM) and
`build/<stage>/deployment.zip`, the code of every function.

`python -m infra.aws.package --stage dev` (`make package`):

1. `chalice package --merge-template infra/aws/resources.yaml`: chalice
   downloads the Lambda-platform wheels of requirements.txt from PyPI and
   writes the SAM template with the tables, queues, rules and alarms merged
   in. Every function must have its own policy file first (functions.py);
2. `template.complete()`: what depends on which functions exist;
3. the zip, rebuilt. Chalice ships no `.pyc`, so Lambda would compile every
   imported module at each cold start: every module is compiled
   (`unchecked-hash`: Lambda's file times mean nothing, and /var/task is
   read-only, so nothing is ever written back). botocore keeps the API
   models of the services the code uses only: they are 15 of chalice's 31 MB
   zipped, one model per AWS service, and the pinned boto3/botocore stay in
   the package rather than whichever version the Lambda runtime carries.
   Files only a compiler reads (`.c`, `.pyx`, `.pxd`, `.h`, `.pyi`) are
   dropped. The zip is reproducible (sorted, fixed times), so an unchanged
   app deploys as unchanged. `import app` and a client of every kept service
   are tried in the package alone (no site-packages) before it is written;
4. `cfn-lint` on the template: an error fails the build.

The dependencies, downloaded, slimmed and compiled, are kept in
build/.dependencies by requirements.txt (chalice's own cache is keyed on
the app's code too, so each code change would download them again): a code
change repackages in seconds.

`--measure` prints the zip's size and the cold import times, with and
without `.pyc` (docs/performance.md).
"""
from __future__ import annotations

import argparse
import compileall
import hashlib
import importlib.util
import os
import py_compile
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import yaml

from infra.aws.functions import missing_policies
from infra.aws.template import FUNCTION, complete

ROOT = Path(__file__).resolve().parents[2]
RESOURCES = ROOT / "infra" / "aws" / "resources.yaml"
DEPENDENCIES = ROOT / "build" / ".dependencies"
BIN = Path(sys.executable).parent
PYTHON_VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"
# Where a function's code lives in Lambda: the paths in tracebacks.
TASK_ROOT = "/var/task"
# What chalice puts in the zip besides the dependencies: the app and chalice's runtime.
APP_ENTRIES = ("app.py", "chalicelib/", "chalice/")

# AWS services whose botocore models the package keeps: the ones the
# architecture calls (PynamoDB and the idempotency table: dynamodb;
# Powertools parameters: ssm; queues, SES, EventBridge), plus any service the
# code names in `client("...")` / `resource("...")`. A service missing here
# fails at `boto3.client(...)` with UnknownServiceError, which the build's
# smoke test and tests/integration/test_infra.py look for.
BOTOCORE_SERVICES = {"dynamodb", "sqs", "ses", "sesv2", "events", "ssm"}
_SERVICE_NAMED = re.compile(r"""\b(?:client|resource)\(\s*["']([a-z0-9-]+)["']""")
COMPILER_ONLY = (".c", ".pyx", ".pxd", ".h", ".pyi")


def services_named_in(tree: Path) -> set[str]:
    """AWS services the app's own code creates clients for."""
    sources = [tree / "app.py", *sorted((tree / "chalicelib").rglob("*.py"))]
    return {name for source in sources if source.exists() for name in _SERVICE_NAMED.findall(source.read_text())}


def kept_services() -> set[str]:
    return BOTOCORE_SERVICES | services_named_in(ROOT)


# -- chalice ---------------------------------------------------------------------


def _chalice_packager():
    from chalice.deploy.packager import LambdaDeploymentPackager
    from chalice.utils import UI, OSUtils

    return LambdaDeploymentPackager(OSUtils(), None, UI())


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:32]


def downloaded_zip() -> Path:
    """Our copy of chalice's download, by requirements.txt alone."""
    import chalice

    key = _digest((ROOT / "requirements.txt").read_bytes(), PYTHON_VERSION.encode(), chalice.__version__.encode())
    return DEPENDENCIES / f"downloaded-{key}.zip"


def prime_chalice_cache() -> Path:
    """Chalice keys its cache of downloaded dependencies on requirements.txt
    and the app's code, so every code change downloads them all again
    (minutes). When our copy has them, chalice's entry for this code is made
    from it (chalice's `inject_latest_app` puts the current code in).
    Returns chalice's entry."""
    packager = _chalice_packager()
    entry = Path(packager.deployment_package_filename(str(ROOT), PYTHON_VERSION))
    ours = downloaded_zip()
    if not entry.exists() and ours.exists():
        entry.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ours, entry)
        packager.inject_latest_app(str(entry), str(ROOT))
    return entry


def _replace_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def keep_download(entries: list[Path]) -> None:
    """Keep chalice's entry as our copy (if new) and take this run's entries
    out of chalice's cache, where one 30 MB file per code change would pile
    up. (There are two when the code changed while chalice ran.)"""
    ours = downloaded_zip()
    for entry in entries:
        if entry.exists() and not ours.exists():
            _replace_file(entry, ours)
            for stale in DEPENDENCIES.glob("downloaded-*.zip"):
                if stale != ours:
                    stale.unlink(missing_ok=True)
        entry.unlink(missing_ok=True)


def chalice_package(stage: str, out: Path) -> Path:
    """Run `chalice package` into `out` (emptied first); returns its template."""
    shutil.rmtree(out, ignore_errors=True)
    entry = prime_chalice_cache()
    before = set(entry.parent.glob("*.zip"))
    env = {key: value for key, value in os.environ.items() if key != "AWS_ENDPOINT_URL"}
    # chalice wants a region although the template names none (${AWS::Region}).
    env.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    subprocess.run(
        [str(BIN / "chalice"), "package", "--stage", stage, "--merge-template", str(RESOURCES), str(out)],
        cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
    )
    keep_download([entry, *sorted(set(entry.parent.glob("*.zip")) - before - {entry})])
    return out / "sam.yaml"


# -- the zip ---------------------------------------------------------------------


def is_app_entry(name: str) -> bool:
    return name == APP_ENTRIES[0] or name.startswith(APP_ENTRIES[1:])


def _kept_dependency(name: str, services: set[str]) -> bool:
    if is_app_entry(name) or name.endswith("/") or name.endswith(COMPILER_ONLY):
        return False
    parts = name.split("/")
    if parts[:2] == ["botocore", "data"] and len(parts) > 3:
        return parts[2] in services
    return True


def compile_tree(tree: Path) -> None:
    """`.pyc` beside every module, trusted without checking the source.
    A third-party file that does not compile (a template, a Python 2
    leftover) is never imported, so it is left as it is."""
    compileall.compile_dir(
        str(tree), ddir=TASK_ROOT, quiet=2, workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def write_zip(tree: Path, archive: zipfile.ZipFile) -> None:
    """Add `tree` reproducibly: sorted entries, fixed times, modes kept."""
    for path in sorted(tree.rglob("*")):
        if path.is_dir():
            continue
        info = zipfile.ZipInfo(path.relative_to(tree).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, path.read_bytes(), compresslevel=9)


def compiled_dependencies(chalice_zip: Path, services: set[str]) -> tuple[Path, Path]:
    """The dependencies slimmed and compiled, as a tree (for the smoke test)
    and a zip (the start of every deployment.zip), kept by what they are
    made of."""
    key = _digest(downloaded_zip().name.encode(), ",".join(sorted(services)).encode(), TASK_ROOT.encode())
    done = DEPENDENCIES / f"compiled-{key}"
    if not (done / "dependencies.zip").exists():
        work = DEPENDENCIES / f".compiling-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        with zipfile.ZipFile(chalice_zip) as archive:
            for name in archive.namelist():
                if _kept_dependency(name, services):
                    archive.extract(name, work / "tree")
        compile_tree(work / "tree")
        with zipfile.ZipFile(work / "dependencies.zip", "w") as archive:
            write_zip(work / "tree", archive)
        shutil.rmtree(done, ignore_errors=True)
        os.replace(work, done)
        for stale in DEPENDENCIES.glob("compiled-*"):
            if stale != done:
                shutil.rmtree(stale, ignore_errors=True)
    return done / "tree", done / "dependencies.zip"


def app_tree(chalice_zip: Path, tree: Path) -> None:
    """The app's files from chalice's zip, compiled; every one must compile."""
    shutil.rmtree(tree, ignore_errors=True)
    with zipfile.ZipFile(chalice_zip) as archive:
        for name in archive.namelist():
            if is_app_entry(name) and not name.endswith("/"):
                archive.extract(name, tree)
    compile_tree(tree)
    sources = [tree / "app.py", *(tree / "chalicelib").rglob("*.py")]
    broken = [str(path.relative_to(tree)) for path in sources
              if not Path(importlib.util.cache_from_source(str(path))).exists()]
    if broken:
        raise SystemExit(f"the app does not compile: {broken}")


def lambda_environment(stage: str, path: list[Path]) -> dict[str, str]:
    """The package alone, as Lambda starts it: no site-packages, no credentials."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join(str(p) for p in path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "STAGE": stage,
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "POWERTOOLS_SERVICE_NAME": "billing",
    }


def smoke(path: list[Path], stage: str, services: set[str]) -> None:
    """`import app` and a client of every kept service, in the package alone."""
    code = "import app, boto3\n" f"for service in {sorted(services)!r}:\n" "    boto3.client(service)\n"
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], env=lambda_environment(stage, path), capture_output=True, text=True
    )
    if result.returncode:
        raise SystemExit(f"the package does not work on its own:\n{result.stderr}")


# -- the template ----------------------------------------------------------------


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def runtime_of(template: dict) -> str:
    runtimes = {r["Properties"]["Runtime"] for r in template["Resources"].values() if r["Type"] == FUNCTION}
    if len(runtimes) != 1:
        raise SystemExit(f"expected one Lambda runtime, found {sorted(runtimes)}")
    return runtimes.pop()


def lint(template_path: Path) -> None:
    """cfn-lint: exit bits 1 (fatal) and 2 (error) fail; warnings are shown."""
    result = subprocess.run([str(BIN / "cfn-lint"), str(template_path)], capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if result.returncode & 3:
        raise SystemExit(f"cfn-lint found errors in {template_path}:\n{output}")
    if output:
        print(output, file=sys.stderr)


def build(stage: str, out: Path, *, run_lint: bool = True) -> Path:
    """Package `stage` into `out`; returns the template's path (the zip is
    beside it, as its `CodeUri` says)."""
    from app import app

    problems = missing_policies(app, stage)
    if problems:
        raise SystemExit("\n".join(problems))
    out.mkdir(parents=True, exist_ok=True)
    chalice_out = out / "chalice"
    template = complete(yaml.safe_load(chalice_package(stage, chalice_out).read_text()), stage)
    if runtime_of(template) != PYTHON_VERSION:
        raise SystemExit(f"package with {runtime_of(template)}: the .pyc must match the Lambda runtime")
    chalice_zip = chalice_out / "deployment.zip"
    services = kept_services()
    dependencies, dependencies_zip = compiled_dependencies(chalice_zip, services)
    app_dir = out / "app"
    app_tree(chalice_zip, app_dir)
    smoke([app_dir, dependencies], stage, services)
    zip_path = out / "deployment.zip"
    _replace_file(dependencies_zip, zip_path)
    with zipfile.ZipFile(zip_path, "a") as archive:
        write_zip(app_dir, archive)
    template_path = out / "template.yaml"
    template_path.write_text(yaml.dump(template, Dumper=_NoAliases, sort_keys=False, width=120))
    shutil.rmtree(chalice_out)
    shutil.rmtree(app_dir)
    if run_lint:
        lint(template_path)
    return template_path


# -- measuring -------------------------------------------------------------------


def import_seconds(tree: Path, stage: str, module: str, runs: int) -> float:
    """Median wall time of importing `module` in a fresh interpreter, after
    `app` unless it is `app` (whose own time is then not counted)."""
    before = "" if module == "app" else "import app\n"
    code = f"import time\n{before}t = time.perf_counter()\nimport {module}\nprint(time.perf_counter() - t)\n"
    times = []
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-S", "-c", code], env=lambda_environment(stage, [tree]),
            capture_output=True, text=True, check=True,
        )
        times.append(float(result.stdout))
    return statistics.median(times)


# Heavy libraries the handlers import on first use: paid once per cold
# container, by the functions that reach them.
LAZY_IMPORTS = ("stripe", "jinja2", "fpdf")


def measure(zip_path: Path, stage: str, runs: int = 9) -> str:
    """The zip's size and the import times, as a Markdown table."""
    modules = ("app", *LAZY_IMPORTS)
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "package"
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(tree)
        compiled = {module: import_seconds(tree, stage, module, runs) for module in modules}
        for cache in list(tree.rglob("__pycache__")):
            shutil.rmtree(cache)
        source = {module: import_seconds(tree, stage, module, runs) for module in modules}
    size = zip_path.stat().st_size
    lines = [
        f"deployment.zip: {size / 1e6:.1f} MB ({size} bytes)",
        "",
        "| import, fresh interpreter, median of %d | with .pyc | without .pyc |" % runs,
        "| --- | --- | --- |",
    ]
    for module in modules:
        label = "`import app` (every function's handler module)" if module == "app" else f"`import {module}` after app"
        lines.append(f"| {label} | {compiled[module] * 1000:.0f} ms | {source[module] * 1000:.0f} ms |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Package a stage: build/<stage>/template.yaml and deployment.zip.")
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--out", type=Path, help="default: build/<stage>")
    parser.add_argument("--no-lint", action="store_true")
    parser.add_argument("--measure", action="store_true", help="print the zip's size and cold import times")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "build" / args.stage
    template_path = build(args.stage, out, run_lint=not args.no_lint)
    zip_path = out / "deployment.zip"
    print(f"{template_path.relative_to(ROOT) if template_path.is_relative_to(ROOT) else template_path}: "
          f"deployment.zip {zip_path.stat().st_size / 1e6:.1f} MB")
    if args.measure:
        print(measure(zip_path, args.stage))
    return 0


if __name__ == "__main__":
    sys.exit(main())
