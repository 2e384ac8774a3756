"""The console's pages over HTTP on a local stage of the bench's own, at a
shop's size: the data of tests/bench/bench_console.py (BENCH_CONSOLE_CUSTOMERS
customers, BENCH_CONSOLE_BILLED of them billed every month for
BENCH_CONSOLE_MONTHS months), written through the services into the
stage's moto server, then each page asked for by a signed-in browser
session, BENCH_CONSOLE_REQUESTS times.

What it measures is the server time a member of staff waits for: from the
request sent to the page received, on loopback, with the API server a
process of its own and every DynamoDB request a round trip to moto's server
(on loopback ~1-3 ms each, where DynamoDB in the function's region answers a
Query in a few ms). tests/bench/bench_console.py counts the requests and our
CPU per page in-process; this adds what the round trips cost.

Run: `python -m tests.bench.bench_console_stage` (`make bench-console-stage`).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REQUESTS = int(os.environ.get("BENCH_CONSOLE_REQUESTS", "30"))


def populate() -> None:
    """In the stage's environment: bench_console's data; prints the billed
    (customer, subscription) pairs as JSON."""
    stage = dict(os.environ)
    # Both set the benchmarks' environment when imported: the stage's is put back.
    import importlib

    bench_console = importlib.import_module("tests.bench.bench_console")
    importlib.import_module("tests.bench.bench_billing")

    os.environ.clear()
    os.environ.update(stage)
    _, _, billed = bench_console.setup()
    print(json.dumps(billed))


def main() -> dict:
    import requests

    from tests.bench import bench_console
    from tests.load.population import OwnStage, console_sign_in, percentile

    with tempfile.TemporaryDirectory() as scratch, OwnStage(Path(scratch) / "stage") as own:
        # The data is written by a process with the stage's environment, as
        # the stage's own processes are (its AWS endpoint, tables and keys).
        started = time.monotonic()
        made = subprocess.run([sys.executable, "-m", "tests.bench.bench_console_stage", "--populate"],
                              env=own.stage.env, capture_output=True, text=True, check=False)
        if made.returncode != 0:
            raise RuntimeError(f"populating the stage failed:\n{made.stderr[-3000:]}")
        billed = json.loads(made.stdout.strip().splitlines()[-1])
        # Signed in as a browser is, at the stage's own time.
        cookie, _ = console_sign_in(own.api_base, *bench_console.OWNER)
        setup_seconds = round(time.monotonic() - started, 1)
        browser = requests.Session()
        browser.cookies.set("console_session", cookie)
        browser.headers.update({"Accept-Language": "fr", "Accept": "text/html"})
        pages = {
            "GET /console (dashboard)": lambda i: "/console",
            "GET /console/customers": lambda i: "/console/customers",
            "GET /console/customers?q=dup": lambda i: "/console/customers?q=dup",
            "GET /console/customers/{id} (24 months billed)": lambda i: f"/console/customers/{billed[i % len(billed)][0]}",
        }
        results = {}
        for label, path in pages.items():
            first = browser.get(own.api_base + path(0), timeout=60, allow_redirects=False)
            if first.status_code != 200:
                raise RuntimeError(f"{label}: {first.status_code} {first.text[:300]}")
            times = []
            for i in range(REQUESTS):
                sent = time.perf_counter()
                answer = browser.get(own.api_base + path(i), timeout=60, allow_redirects=False)
                times.append((time.perf_counter() - sent) * 1000)
                assert answer.status_code == 200, (label, answer.status_code)
            results[label] = {"server_ms_median": round(statistics.median(times), 1),
                              "server_ms_p95": round(percentile(times, 0.95), 1), "requests": REQUESTS,
                              "bytes": len(first.content)}
    summary = {"benchmark": "console_stage", "customers": bench_console.CUSTOMERS, "months": bench_console.MONTHS,
               "billed_customers": len(billed), "setup_seconds": setup_seconds, "pages": results,
               "python": sys.version.split()[0]}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    if sys.argv[1:] == ["--populate"]:
        populate()
    else:
        main()
