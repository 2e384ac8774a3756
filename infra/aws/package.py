"""Build what a stage deploys: `build/<stage>/template.yaml` (SAM) and
`build/<stage>/deployment.zip`, the code of every function.

`python -m infra.aws.package --stage dev` (`make package`):

1. `chalice package --merge-template infra/aws/resources.yaml`: chalice
   downloads the Lambda-platform wheels of requirements.txt from PyPI and
   writes the SAM template with the tables, queues, rules and alarms merged
   in. Every function must have its own policy file first (functions.py);
2. `template.complete()`: what depends on which functions exist;
3. the zip, rebuilt. Chalice ships no `.pyc`, so Lambda would compile every
   imported module at each cold start (/var/task is read-only: nothing is
   ever written back). Every module of the app is compiled, and every
   third-party module that the functions import (`cold_imports()`: `import
   app`, every chalicelib module, the libraries imported on first use and
   the Stripe services and objects payments.py works with), as
   `unchecked-hash` `.pyc` (Lambda's file times mean nothing). A module
   outside that set still works, compiled in memory the first time it is
   imported: compiling all of them would double the zip (stripe alone has
   10 MB of `.pyc`, mostly never imported). Slimming, none of which changes
   what the pinned versions do: botocore keeps the API models of the
   services the code uses only (15 of chalice's 31 MB zipped; the pinned
   boto3/botocore stay in the package rather than whichever version the
   Lambda runtime carries); a compiled accelerator with a pure-Python twin
   of the same module beside it (fontTools' and charset_normalizer's Cython
   builds, used only for font outlines and encoding guesses) is dropped, the
   library falling back to the twin as it is built to; stub packages that
   only type checkers import (`TYPING_ONLY`), optional libraries the code
   never uses (`UNUSED_OPTIONAL`) and files only a compiler reads
   (`.c`, `.pyx`, `.pxd`, `.h`, `.pyi`) are dropped. The zip is reproducible (sorted, fixed times), so an unchanged
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
import contextlib
import fcntl
import hashlib
import importlib.util
import json
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
# Packages that only type checkers import: stripe's request parameter
# TypedDicts are imported under `if TYPE_CHECKING` only (2 MB zipped).
TYPING_ONLY = ("stripe/params/",)
# Optional dependencies the code never uses: Pillow is fpdf2's image support
# (fpdf2 imports it only when present; invoices draw no image), 1.7 MB zipped
# and a tenth of a second of the PDF route's first import.
UNUSED_OPTIONAL = ("PIL/", "pillow-")
_EXTENSION = re.compile(r"(?P<module>[^/]+)\.cpython-[^/]*\.so$")


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


def prime_chalice_cache(project: Path) -> Path:
    """Chalice keys its cache of downloaded dependencies on requirements.txt
    and the app's code, so every code change downloads them all again
    (minutes). When our copy has them, chalice's entry for this code is made
    from it (chalice's `inject_latest_app` puts the current code in).
    Returns chalice's entry."""
    packager = _chalice_packager()
    entry = Path(packager.deployment_package_filename(str(project), PYTHON_VERSION))
    ours = downloaded_zip()
    if not entry.exists() and ours.exists():
        entry.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ours, entry)
        packager.inject_latest_app(str(entry), str(project))
    return entry


def project_snapshot(target: Path) -> Path:
    """What chalice packages, copied to `target`: the app, chalicelib
    without bytecode, requirements.txt and the stage settings. Chalice hashes
    every file of chalicelib before and after its (minutes-long) download
    and looks for its zip under the second name: in the working tree, a
    `.pyc` written meanwhile by a test or an editor would make it lose its
    own zip."""
    shutil.copy2(ROOT / "app.py", target / "app.py")
    shutil.copy2(ROOT / "requirements.txt", target / "requirements.txt")
    shutil.copytree(ROOT / "chalicelib", target / "chalicelib",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (target / ".chalice").mkdir()
    shutil.copy2(ROOT / ".chalice" / "config.json", target / ".chalice" / "config.json")
    shutil.copytree(ROOT / ".chalice" / "policies", target / ".chalice" / "policies")
    return target


def _replace_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def keep_download(entry: Path) -> None:
    """Keep chalice's entry as our copy of the dependencies, if it is new."""
    ours = downloaded_zip()
    if entry.exists() and not ours.exists():
        _replace_file(entry, ours)
        for stale in DEPENDENCIES.glob("downloaded-*.zip"):
            if stale != ours:
                stale.unlink(missing_ok=True)


def chalice_package(stage: str, out: Path) -> Path:
    """Run `chalice package` into `out` (emptied first), on a snapshot of the
    project; returns its template."""
    shutil.rmtree(out, ignore_errors=True)
    env = {key: value for key, value in os.environ.items() if key != "AWS_ENDPOINT_URL"}
    # chalice wants a region although the template names none (${AWS::Region}).
    env.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    (ROOT / "build").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / "build", prefix=".project-") as scratch:
        project = project_snapshot(Path(scratch))
        entry = prime_chalice_cache(project)
        subprocess.run(
            [str(BIN / "chalice"), "package", "--stage", stage, "--merge-template", str(RESOURCES), str(out)],
            cwd=project, env=env, check=True, stdout=subprocess.DEVNULL,
        )
        keep_download(entry)
    return out / "sam.yaml"


# -- the zip ---------------------------------------------------------------------


def is_app_entry(name: str) -> bool:
    return name == APP_ENTRIES[0] or name.startswith(APP_ENTRIES[1:])


def _kept_dependency(name: str, services: set[str], names: set[str] = frozenset()) -> bool:
    """Whether the package keeps `name`, a file of chalice's zip (`names`:
    all of them, to find an extension's pure-Python twin)."""
    if is_app_entry(name) or name.endswith("/") or name.endswith(COMPILER_ONLY) or name.startswith(TYPING_ONLY + UNUSED_OPTIONAL):
        return False
    extension = _EXTENSION.search(name)
    if extension and name[:extension.start()] + extension["module"] + ".py" in names:
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


def slim_dependencies(chalice_zip: Path, services: set[str]) -> Path:
    """The dependencies of chalice's zip that the package keeps, as source,
    kept by what they are made of."""
    key = _digest(downloaded_zip().name.encode(), ",".join(sorted(services)).encode(),
                  repr((COMPILER_ONLY, TYPING_ONLY, UNUSED_OPTIONAL)).encode())
    done = DEPENDENCIES / f"slim-{key}"
    if not done.exists():
        work = DEPENDENCIES / f".slimming-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        with zipfile.ZipFile(chalice_zip) as archive:
            names = set(archive.namelist())
            for name in sorted(names):
                if _kept_dependency(name, services, names):
                    archive.extract(name, work)
        shutil.rmtree(done, ignore_errors=True)
        os.replace(work, done)
        for stale in DEPENDENCIES.glob("slim-*"):
            if stale != done:
                shutil.rmtree(stale, ignore_errors=True)
    return done


# What the trace imports besides `app` and chalicelib: the libraries the
# handlers import on first use, and the Stripe services (`client.v1.<name>`)
# and objects (what its answers become) that chalicelib/payments.py uses.
LAZY_IMPORTS = ("stripe", "jinja2", "fpdf")
STRIPE_SERVICES = ("customers", "payment_intents", "payment_methods", "setup_intents", "refunds")
STRIPE_OBJECTS = ("list", "customer", "payment_intent", "payment_method", "setup_intent", "refund", "charge", "event")
_TRACE = """
import importlib, json, pkgutil, sys
import app, chalicelib
for module in pkgutil.walk_packages(chalicelib.__path__, "chalicelib."):
    if module.name != "chalicelib.api.local":
        importlib.import_module(module.name)
for name in {lazy!r}:
    importlib.import_module(name)
import stripe
from stripe._object_classes import OBJECT_CLASSES
client = stripe.StripeClient("sk_test_trace")
for name in {services!r}:
    getattr(client.v1, name)
for name in {objects!r}:
    importlib.import_module(OBJECT_CLASSES[name][0])
print(json.dumps(sorted({{m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)}})))
"""


def cold_imports(app_dir: Path, dependencies: Path, stage: str) -> list[str]:
    """The dependency files (relative to `dependencies`) that the functions
    import, found by importing them in the package alone."""
    code = _TRACE.format(lazy=LAZY_IMPORTS, services=STRIPE_SERVICES, objects=STRIPE_OBJECTS)
    result = subprocess.run([sys.executable, "-S", "-c", code], env=lambda_environment(stage, [app_dir, dependencies]),
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"the package does not import on its own:\n{result.stderr}")
    root = str(dependencies) + os.sep
    return sorted(path[len(root):] for path in json.loads(result.stdout) if path.startswith(root)
                  and path.endswith(".py"))


def compiled_dependencies(slim: Path, modules: list[str]) -> tuple[Path, Path]:
    """The slim dependencies with `modules` compiled, as a tree (for the
    smoke test) and a zip (the start of every deployment.zip), kept by what
    they are made of."""
    key = _digest(slim.name.encode(), "\n".join(modules).encode(), TASK_ROOT.encode())
    done = DEPENDENCIES / f"compiled-{key}"
    if not (done / "dependencies.zip").exists():
        work = DEPENDENCIES / f".compiling-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(slim, work / "tree")
        for module in modules:
            source = work / "tree" / module
            py_compile.compile(str(source), cfile=importlib.util.cache_from_source(str(source)),
                               dfile=f"{TASK_ROOT}/{module}", doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
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
    """`import app`, a client of every kept service and a one-page PDF (fpdf2
    without Pillow), in the package alone."""
    code = (
        "import app, boto3, warnings\n"
        f"for service in {sorted(services)!r}:\n"
        "    boto3.client(service)\n"
        "warnings.filterwarnings('ignore', message='Pillow could not be imported')\n"
        "from fpdf import FPDF\n"
        "pdf = FPDF(); pdf.add_page(); pdf.set_font('helvetica', size=12); pdf.cell(text='Facture 1,00 EUR')\n"
        "assert bytes(pdf.output()).startswith(b'%PDF')\n"
    )
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


@contextlib.contextmanager
def _dependencies_lock():
    """One build at a time uses build/.dependencies: a build replaces what
    another would be reading (two `make package`, or two test workers)."""
    DEPENDENCIES.mkdir(parents=True, exist_ok=True)
    with open(DEPENDENCIES / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build(stage: str, out: Path, *, run_lint: bool = True) -> Path:
    """Package `stage` into `out`; returns the template's path (the zip is
    beside it, as its `CodeUri` says)."""
    with _dependencies_lock():
        return _build(stage, out, run_lint=run_lint)


def _build(stage: str, out: Path, *, run_lint: bool) -> Path:
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
    slim = slim_dependencies(chalice_zip, services)
    app_dir = out / "app"
    app_tree(chalice_zip, app_dir)
    dependencies, dependencies_zip = compiled_dependencies(slim, cold_imports(app_dir, slim, stage))
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


def measurements(zip_path: Path, stage: str, runs: int = 9) -> dict:
    """The zip's size and cold import times, for benchmarks: `{"zip_bytes":
    int, "runs": int, "import_seconds": {module: {"pyc": s, "source": s}}}`,
    modules `app` (the handler module of every function) then LAZY_IMPORTS
    (each after `app`), medians of `runs` fresh interpreters on the package
    alone."""
    modules = ("app", *LAZY_IMPORTS)
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "package"
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(tree)
        compiled = {module: import_seconds(tree, stage, module, runs) for module in modules}
        for cache in list(tree.rglob("__pycache__")):
            shutil.rmtree(cache)
        source = {module: import_seconds(tree, stage, module, runs) for module in modules}
    return {"zip_bytes": zip_path.stat().st_size, "runs": runs,
            "import_seconds": {module: {"pyc": compiled[module], "source": source[module]} for module in modules}}


def measure(zip_path: Path, stage: str, runs: int = 9) -> str:
    """`measurements()` as Markdown."""
    found = measurements(zip_path, stage, runs)
    size = found["zip_bytes"]
    lines = [
        f"deployment.zip: {size / 1e6:.1f} MB ({size} bytes)",
        "",
        "| import, fresh interpreter, median of %d | with .pyc | without .pyc |" % runs,
        "| --- | --- | --- |",
    ]
    for module, seconds in found["import_seconds"].items():
        label = "`import app` (every function's handler module)" if module == "app" else f"`import {module}` after app"
        lines.append(f"| {label} | {seconds['pyc'] * 1000:.0f} ms | {seconds['source'] * 1000:.0f} ms |")
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
