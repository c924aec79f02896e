"""Benchmark: list 10,000 tags from a local real registry (distribution 2.8).

Two scenarios: directly from the registry (it ignores ``?n=`` and answers in one response), and
through the paginating proxy of the tests with 100 tags a page (Docker Hub's and GHCR's size, Quay's
relative ``Link``). Each scenario runs in a fresh process so its peak RSS is its own; the proxy runs
in another process. Reports the median wall time of several listings, requests per listing and
peak RSS, and writes ``bench/results/tags_listing.json``.

    python -m bench.tags_listing [--runs 7] [--tags 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "tags_listing.json"
REPOSITORY = "specivo/specivo"
TARGET_SECONDS = 2.0
PAGE_SIZE = 100


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _listings(address: str, page_size: int, runs: int) -> dict[str, Any]:
    from specivod.adapters.registry import RegistryClient
    from specivod.domain.references import ImageReference
    from specivod.retrying import RetryPolicy

    baseline = _peak_rss_mib()
    times: list[float] = []
    requests: list[int] = []
    count = 0
    for _ in range(runs):
        started = time.perf_counter()
        async with RegistryClient(
            ImageReference(address, REPOSITORY),
            page_size=page_size,
            retry=RetryPolicy(attempts=1),
            timeout=30,
        ) as client:
            tags = await client.list_tags()
        times.append(time.perf_counter() - started)
        requests.append(client.requests)
        count = len(tags)
    return {
        "tags_listed": count,
        "runs_s": [round(t, 4) for t in times],
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "requests_per_listing": sorted(set(requests)),
        "rss_before_listing_mib": round(baseline, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
    }


def _child(args: argparse.Namespace) -> None:
    print(json.dumps(asyncio.run(_listings(args.address, args.page_size, args.runs))))


def _measure(address: str, page_size: int, runs: int) -> dict[str, Any]:
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.tags_listing",
            "--child",
            "--address",
            address,
            "--page-size",
            str(page_size),
            "--runs",
            str(runs),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(output)
    return result


def _start_proxy(upstream: str, page: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.paging_proxy",
            "--upstream",
            upstream,
            "--page",
            str(page),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().split()
    if line[:1] != ["ready"]:
        process.kill()
        raise RuntimeError("paging proxy did not start")
    return process, line[1]


def _registry_version() -> str:
    result = subprocess.run(
        ["docker-registry", "--version"], check=False, capture_output=True, text=True
    )
    return (result.stdout or result.stderr).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--page-size", type=int, default=PAGE_SIZE, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    sys.path.insert(0, str(ROOT))
    from tests.support.oci_push import add_tags, push_image
    from tests.support.registry import start_registry

    with tempfile.TemporaryDirectory(prefix="specivod-bench-") as workdir:
        registry = start_registry(Path(workdir))
        proxy: subprocess.Popen[str] | None = None
        try:
            started = time.perf_counter()
            image = push_image(registry.url, REPOSITORY, "0.0.0")
            names = (f"{i // 10_000}.{(i // 100) % 100}.{i % 100}" for i in range(1, args.tags))
            add_tags(registry.url, image, names, workers=16)
            setup_s = time.perf_counter() - started
            print(f"pushed {args.tags} tags in {setup_s:.1f}s", file=sys.stderr)
            proxy, proxy_address = _start_proxy(registry.address, PAGE_SIZE)
            scenarios = [
                {
                    "name": "direct, one response",
                    "page_size": PAGE_SIZE,
                    "expected_requests": 1,
                    **_measure(registry.address, PAGE_SIZE, args.runs),
                },
                {
                    "name": f"paging proxy, {PAGE_SIZE} tags a page, relative Link",
                    "page_size": PAGE_SIZE,
                    "expected_requests": -(-args.tags // PAGE_SIZE),
                    **_measure(proxy_address, PAGE_SIZE, args.runs),
                },
            ]
        finally:
            if proxy is not None:
                proxy.terminate()
                proxy.wait()
            registry.stop()

    for scenario in scenarios:
        scenario["meets_target"] = (
            scenario["median_s"] < TARGET_SECONDS
            and scenario["requests_per_listing"] == [scenario["expected_requests"]]
            and scenario["tags_listed"] == args.tags
        )
    report = {
        "benchmark": "tags_listing",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tags": args.tags,
        "runs": args.runs,
        "target": f"median under {TARGET_SECONDS:g} s and one request per page",
        "environment": {
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "registry": _registry_version(),
            "machine": platform.machine(),
            "cpus": len(os.sched_getaffinity(0)),
            "kernel": platform.release(),
        },
        "setup_push_s": round(setup_s, 1),
        "scenarios": scenarios,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
