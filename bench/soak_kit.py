"""Measuring a process from outside for bench/soak.py: /proc samples (RSS, CPU, fds, threads),
file sizes, a /healthz prober, and least-squares trends.

Rule: nothing here imports specivod; every number comes from /proc, the file system or HTTP.
"""

from __future__ import annotations

import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.daemon_kit import Daemon, usage

PROBE_EVERY = 0.25


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def sample(daemon: Daemon, root: Path, began: float, cycles: int) -> dict[str, Any]:
    pid = daemon.process.pid
    status = Path(f"/proc/{pid}/status").read_text()
    threads = next(line for line in status.splitlines() if line.startswith("Threads:"))
    return {
        "seconds": round(time.monotonic() - began, 1),
        "cycles": cycles,
        **usage(pid),
        "fds": sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir()),
        "threads": int(threads.split()[1]),
        "journal_bytes": size(root / "state" / "journal.sqlite3"),
        "journal_wal_bytes": size(root / "state" / "journal.sqlite3-wal"),
        "log_bytes": (root / "daemon.log").stat().st_size,
    }


class Prober:
    """GET /healthz every ``PROBE_EVERY`` seconds from a thread: how long the daemon's event
    loop keeps a request waiting (a scheduler tick runs on that loop)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.errors = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._probe, daemon=True)
        self.thread.start()

    def _probe(self) -> None:
        while not self.done.wait(PROBE_EVERY):
            began = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=30) as answer:  # noqa: S310
                    answer.read()
                self.latencies.append(time.perf_counter() - began)
            except OSError:
                self.errors += 1

    def take(self) -> dict[str, Any]:
        taken, self.latencies = self.latencies, []
        errors, self.errors = self.errors, 0
        if not taken:
            return {"healthz_errors": errors}
        return {
            "healthz_p50_ms": round(1000 * statistics.median(taken), 1),
            "healthz_max_ms": round(1000 * max(taken), 1),
            "healthz_errors": errors,
        }

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value), in value units per hour."""
    if len(points) < 2:
        return None
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return None
    return 3600 * sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def trend(every: list[dict[str, Any]], key: str) -> dict[str, Any]:
    samples = [s for s in every if s.get(key) is not None]
    values = [s[key] for s in samples]
    half = samples[len(samples) // 2 :]
    whole = slope_per_hour([(s["seconds"], s[key]) for s in samples])
    second = slope_per_hour([(s["seconds"], s[key]) for s in half])
    return {
        "first": values[0],
        "median": statistics.median(values),
        "last": values[-1],
        "min": min(values),
        "max": max(values),
        "slope_per_hour": round(whole, 1) if whole is not None else None,
        "slope_per_hour_second_half": round(second, 1) if second is not None else None,
    }


def per_cycle(after: list[dict[str, Any]], key: str) -> float | None:
    if len(after) < 2:
        return None
    return round(float(after[-1][key] - after[0][key]) / (len(after) - 1), 1)
