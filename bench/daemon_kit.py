"""The pieces bench/daemon.py measures with: a NOTIFY_SOCKET reader, the real ``specivod run``
process on a sandbox deployment, /proc sampling, and a concurrent /metrics scrape load.

Rule: everything is measured from outside the daemon (its socket, its /proc entry, its HTTP
port); nothing here imports specivod.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from sandbox.config import specivod_config, write_config
from sandbox.deployment import SandboxDeployment
from tests.support.ports import free_port

LOADS = ((20, 25), (200, 5))
"""(concurrent scrapers, sequential scrapes each) per load round."""
TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).parent.parent
ALWAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Notify:
    """NOTIFY_SOCKET, read as systemd reads it; remembers when READY=1 arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.settimeout(0.1)
        self.ready_at: float | None = None
        self.pid: int | None = None
        self.cpu_at_ready: float | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                message = self._socket.recv(4096)
            except TimeoutError:
                continue
            if b"READY=1" in message.split(b"\n") and self.ready_at is None:
                self.ready_at = time.monotonic()
                if self.pid is not None:
                    self.cpu_at_ready = usage(self.pid)["cpu_seconds"]

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self._socket.close()
        self.path.unlink(missing_ok=True)


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    base: str
    notify: Notify
    started: float
    config: Path

    def ready_seconds(self, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while self.notify.ready_at is None:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"no READY=1 from the daemon (exit {self.process.poll()})")
            time.sleep(0.005)
        return self.notify.ready_at - self.started

    def status(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(_get(f"{self.base}/api/v1/status"))
        return document

    def ok_polls(self) -> int:
        text = _get(f"{self.base}/metrics").decode()
        found = re.search(r'^specivod_registry_polls_total\{result="ok"\} (\S+)$', text, re.M)
        return int(float(found.group(1))) if found else 0

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)
        self.notify.close()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 (our own http URL)
        body: bytes = answer.read()
        return body


def config_for(
    deployment: SandboxDeployment, root: Path, poll: str, window_open: bool
) -> tuple[Path, str]:
    listen = f"127.0.0.1:{free_port()}"
    hour = (datetime.now(UTC) + timedelta(hours=12)).hour
    closed = {"days": ALWAYS, "start": f"{hour:02}:00", "end": f"{hour:02}:30", "timezone": "UTC"}
    always = {"days": ALWAYS, "start": "00:00", "end": "00:00", "timezone": "UTC"}
    config = specivod_config(
        deployment,
        root,
        registry={"image": deployment.images.app, "timeout": "10s", "poll_interval": poll},
        policy={"range": ">=0.1.0 <0.1.12", "expected_duration": "10m"},
        window=[always if window_open else closed],
        http={"listen": listen},
        backup={"dir": str(root / "backups"), "keep": 1, "min_free_bytes": "10MB"},
    )
    return write_config(root / "specivod.toml", config), listen


def start(config: Path, listen: str, root: Path) -> Daemon:
    notify = Notify(root / f"notify-{time.monotonic_ns()}.sock")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
    environment.update(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="60000000")
    with (root / "daemon.log").open("ab") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "specivod", "--config", str(config), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=ROOT,
        )
    notify.pid = process.pid
    return Daemon(process, f"http://{listen}", notify, started, config)


def _kilobytes(status: str, name: str) -> int:
    found = re.search(rf"^{name}:\s+(\d+) kB", status, re.M)
    return int(found.group(1)) * 1024 if found else 0


def usage(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM, and CPU seconds of the process and of its waited-for children."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return {
        "rss_bytes": _kilobytes(status, "VmRSS"),
        "hwm_bytes": _kilobytes(status, "VmHWM"),
        "cpu_seconds": (int(fields[11]) + int(fields[12])) / TICKS,
        "children_cpu_seconds": (int(fields[13]) + int(fields[14])) / TICKS,
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def _load(url: str, scrapers: int, each: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def scraper() -> None:
            nonlocal errors
            for _ in range(each):
                began = time.perf_counter()
                try:
                    async with session.get(url) as answer:
                        body = await answer.read()
                        if answer.status != 200 or b"specivod_upgrade_state" not in body:
                            errors += 1
                            continue
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(scraper() for _ in range(scrapers)))
    return latencies, errors


def summary(latencies: list[float], errors: int, rounds: int) -> dict[str, Any]:
    milliseconds = [value * 1000 for value in latencies]
    return {
        "rounds": rounds,
        "requests": len(latencies) + errors,
        "errors": errors,
        "p50_ms": round(percentile(milliseconds, 0.5), 2) if milliseconds else None,
        "p99_ms": round(percentile(milliseconds, 0.99), 2) if milliseconds else None,
        "max_ms": round(max(milliseconds), 2) if milliseconds else None,
    }


def ab_round(url: str, scrapers: int, requests: int) -> tuple[float, float, int]:
    """One round of ApacheBench (a C client, keep-alive): p50 and p99 in ms, failed requests."""
    with tempfile.NamedTemporaryFile(suffix=".csv") as table:
        command = ["ab", "-q", "-k", "-n", str(requests), "-c", str(scrapers)]
        done = subprocess.run(
            [*command, "-e", table.name, url], capture_output=True, text=True, check=False
        )
        rows = dict(line.split(",") for line in Path(table.name).read_text().splitlines()[1:])
    if done.returncode != 0 or not rows:
        return math.nan, math.nan, requests
    # ab counts a body whose length differs from the first one's as failed ("Length"): the
    # metrics text changes between renders, so only the other kinds are errors.
    kinds = re.findall(r"(Connect|Receive|Exceptions): (\d+)", done.stdout)
    non_2xx = re.search(r"Non-2xx responses:\s+(\d+)", done.stdout)
    failed = sum(int(count) for _, count in kinds) + (int(non_2xx.group(1)) if non_2xx else 0)
    return float(rows["50"]), float(rows["99"]), failed


def ab_summary(rounds: list[tuple[float, float, int]], requests: int) -> dict[str, Any]:
    return {
        "rounds": len(rounds),
        "requests": requests * len(rounds),
        "errors": sum(failed for _, _, failed in rounds),
        "p50_ms_median": round(statistics.median(p50 for p50, _, _ in rounds), 2),
        "p99_ms_median": round(statistics.median(p99 for _, p99, _ in rounds), 2),
        "p99_ms_max": round(max(p99 for _, p99, _ in rounds), 2),
    }


def scrape_while(daemon: Daemon, busy: Callable[[], bool], min_rounds: int) -> dict[str, Any]:
    """Load rounds until ``busy()`` is false and ``min_rounds`` ran; each round runs every
    load of ``LOADS`` from this process (aiohttp) and then from ApacheBench."""
    url = f"{daemon.base}/metrics"
    collected: dict[int, tuple[list[float], list[int]]] = {n: ([], []) for n, _ in LOADS}
    with_ab: dict[int, list[tuple[float, float, int]]] = {n: [] for n, _ in LOADS}
    rounds = 0
    while busy() or rounds < min_rounds:
        for scrapers, each in LOADS:
            latencies, errors = asyncio.run(_load(url, scrapers, each))
            collected[scrapers][0].extend(latencies)
            collected[scrapers][1].append(errors)
            with_ab[scrapers].append(ab_round(url, scrapers, scrapers * each))
        rounds += 1
        if not busy() and rounds >= min_rounds:
            break
    results: dict[str, Any] = {
        f"{scrapers}_scrapers": summary(latencies, sum(errors), rounds)
        for scrapers, (latencies, errors) in collected.items()
    }
    for scrapers, each in LOADS:
        results[f"{scrapers}_scrapers_ab"] = ab_summary(with_ab[scrapers], scrapers * each)
    results["load_average_at_end"] = os.getloadavg()
    return results
