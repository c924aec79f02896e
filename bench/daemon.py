"""``specivod run`` on the real sandbox stack: start to READY, idle RSS and CPU, RSS over 1,000
registry polls, and ``/metrics`` latency under 20 and 200 concurrent scrapers — idle, while a
``specivod backup`` CLI process dumps a ~1.2 GiB database, and while the daemon itself runs an
upgrade whose backup step dumps it (the event loop under test).

Every daemon is the real ``python -m specivod run`` process with a NOTIFY_SOCKET bound here (READY
is timed from just before exec to the READY=1 datagram) and systemd's WatchdogSec=60. Idle
daemons have a closed maintenance window. RSS is VmRSS from /proc/PID/status, CPU utime+stime
from /proc/PID/stat (the daemon's own; its docker compose children are reported apart). Latency
is per request from an aiohttp client in this process, keep-alive connections, one scrape loop
per scraper; the machine is shared, so the load average is recorded with the results.

Writes bench/results/daemon.json. Run: ``.venv/bin/python -m bench.daemon`` (overrides:
``BENCH_IDLE_SECONDS`` (600), ``BENCH_POLLS`` (1000), ``BENCH_DB_MB`` (1230), ``BENCH_STARTS`` (5)).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
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

from bench.backup_dump import _build_images, fill_to
from sandbox.config import specivod_config, write_config
from sandbox.deployment import SandboxDeployment, create_deployment
from sandbox.dockerd import start_engine
from sandbox.images import ImageNames
from tests.support.ports import free_port
from tests.support.registry import start_registry

IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "600"))
POLLS = int(os.environ.get("BENCH_POLLS", "1000"))
DB_MB = int(os.environ.get("BENCH_DB_MB", "1230"))
STARTS = int(os.environ.get("BENCH_STARTS", "5"))
SAMPLE_EVERY = 10.0
LOADS = ((20, 25), (200, 5))
"""(concurrent scrapers, sequential scrapes each) per load round."""
RESULTS = Path(__file__).parent / "results" / "daemon.json"
MIB = 1 << 20
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


def scrape_while(daemon: Daemon, busy: Callable[[], bool], min_rounds: int) -> dict[str, Any]:
    """Load rounds (20 then 200 scrapers) until ``busy()`` is false and ``min_rounds`` ran."""
    collected: dict[int, tuple[list[float], list[int]]] = {n: ([], []) for n, _ in LOADS}
    rounds = 0
    while busy() or rounds < min_rounds:
        for scrapers, each in LOADS:
            latencies, errors = asyncio.run(_load(f"{daemon.base}/metrics", scrapers, each))
            collected[scrapers][0].extend(latencies)
            collected[scrapers][1].append(errors)
        rounds += 1
        if not busy() and rounds >= min_rounds:
            break
    return {
        f"{scrapers}_scrapers": summary(latencies, sum(errors), rounds)
        for scrapers, (latencies, errors) in collected.items()
    }


def measure_ready(deployment: SandboxDeployment, root: Path) -> dict[str, Any]:
    runs = []
    for _ in range(STARTS):
        config, listen = config_for(deployment, root, "6h", window_open=False)
        daemon = start(config, listen, root)
        runs.append(daemon.ready_seconds())
        daemon.stop()
    print(f"READY: {[round(run, 3) for run in runs]}", flush=True)
    return {
        "runs_seconds": [round(run, 3) for run in runs],
        "median_seconds": statistics.median(runs),
    }


def measure_idle(deployment: SandboxDeployment, root: Path) -> tuple[dict[str, Any], int]:
    """Idle for IDLE_SECONDS (one-minute polls, closed window) while the database is filled
    beside it; then the idle scrape latency."""
    config, listen = config_for(deployment, root, "1m", window_open=False)
    daemon = start(config, listen, root)
    daemon.ready_seconds()
    size: list[int] = []
    filler = threading.Thread(target=lambda: size.append(fill_to(deployment, DB_MB)))
    filler.start()
    time.sleep(5)  # past the first poll and tick
    first = usage(daemon.process.pid)
    began = time.monotonic()
    samples = []
    while (elapsed := time.monotonic() - began) < IDLE_SECONDS:
        samples.append({"seconds": round(elapsed, 1), **usage(daemon.process.pid)})
        time.sleep(SAMPLE_EVERY)
    last = usage(daemon.process.pid)
    elapsed = time.monotonic() - began
    rss = [sample["rss_bytes"] for sample in samples]
    idle = {
        "seconds": round(elapsed, 1),
        "poll_interval": "1m",
        "samples": samples,
        "rss_first_bytes": first["rss_bytes"],
        "rss_last_bytes": last["rss_bytes"],
        "rss_median_bytes": statistics.median(rss),
        "rss_max_bytes": max(rss),
        "cpu_percent": round(100 * (last["cpu_seconds"] - first["cpu_seconds"]) / elapsed, 3),
        "children_cpu_percent": round(
            100 * (last["children_cpu_seconds"] - first["children_cpu_seconds"]) / elapsed, 3
        ),
    }
    print(f"idle: {json.dumps({k: v for k, v in idle.items() if k != 'samples'})}", flush=True)
    filler.join()
    idle["metrics_latency"] = scrape_while(daemon, lambda: False, 5)
    print(f"idle scrapes: {idle['metrics_latency']}", flush=True)
    daemon.stop()
    return idle, size[0]


def measure_polls(deployment: SandboxDeployment, root: Path) -> dict[str, Any]:
    config, listen = config_for(deployment, root, "100ms", window_open=False)
    daemon = start(config, listen, root)
    daemon.ready_seconds()
    marks = [0, POLLS // 4, POLLS // 2, 3 * POLLS // 4, POLLS]
    samples = []
    began = time.monotonic()
    for mark in marks:
        while (polls := daemon.ok_polls()) < mark:
            time.sleep(0.2)
        samples.append({"polls": polls, "seconds": round(time.monotonic() - began, 1)})
        samples[-1].update(usage(daemon.process.pid))
        print(f"polls: {samples[-1]}", flush=True)
    daemon.stop()
    return {"poll_interval": "100ms", "samples": samples}


def measure_cli_backup(deployment: SandboxDeployment, root: Path) -> dict[str, Any]:
    config, listen = config_for(deployment, root, "10s", window_open=False)
    daemon = start(config, listen, root)
    daemon.ready_seconds()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
    began = time.monotonic()
    backup = subprocess.Popen(
        [sys.executable, "-m", "specivod", "--config", str(config), "backup"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=environment,
        cwd=ROOT,
    )
    latency = scrape_while(daemon, lambda: backup.poll() is None, 1)
    _, stderr = backup.communicate()
    result = {
        "backup_exit": backup.returncode,
        "backup_seconds": round(time.monotonic() - began, 1),
        "metrics_latency": latency,
    }
    if backup.returncode != 0:
        result["backup_stderr"] = stderr.decode()[-2000:]
    print(f"during a CLI backup: {result}", flush=True)
    daemon.stop()
    return result


def measure_daemon_upgrade(deployment: SandboxDeployment, root: Path) -> dict[str, Any]:
    """The daemon's own upgrade to 0.1.11: opened by SIGHUP with an always-open window."""
    config, listen = config_for(deployment, root, "2s", window_open=False)
    daemon = start(config, listen, root)
    daemon.ready_seconds()
    open_config, _ = config_for(deployment, root, "2s", window_open=True)
    text = open_config.read_text()
    open_config.write_text(re.sub(r'listen = "[^"]+"', f'listen = "{listen}"', text))
    daemon.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 120
    while not daemon.status()["in_progress"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the daemon did not start its upgrade: {daemon.status()}")
        time.sleep(0.05)
    began = time.monotonic()

    def backing_up() -> bool:
        transaction = daemon.status()["transaction"]
        return transaction is not None and transaction["state"] in ("planned", "backing_up")

    during_backup = scrape_while(daemon, backing_up, 1)
    backup_seconds = time.monotonic() - began
    rest = scrape_while(daemon, lambda: bool(daemon.status()["in_progress"]), 0)
    final = daemon.status()
    result = {
        "outcome": final["transaction"],
        "seconds_in_backup_step": round(backup_seconds, 1),
        "metrics_latency_backup_step": during_backup,
        "metrics_latency_rest_of_upgrade": rest,
        "daemon_peak_rss_bytes": usage(daemon.process.pid)["hwm_bytes"],
    }
    print(f"during the daemon's upgrade: {json.dumps(result, default=str)}", flush=True)
    daemon.stop()
    return result


def _version(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="specivod-bench-daemon-") as directory:
        scratch = Path(directory)
        engine = start_engine(scratch / "dockerd.log")
        registry = start_registry(scratch / "registry")
        try:
            context = multiprocessing.get_context("spawn")
            with context.Pool(1) as pool:
                images = ImageNames(pool.apply(_build_images, (registry.address,)))
            deployment = create_deployment(scratch, images)
            try:
                ready = measure_ready(deployment, scratch)
                idle, database_bytes = measure_idle(deployment, scratch)
                polls = measure_polls(deployment, scratch)
                cli_backup = measure_cli_backup(deployment, scratch)
                upgrade = measure_daemon_upgrade(deployment, scratch)
                postgres = deployment.psql("SHOW server_version")
            finally:
                deployment.down()
        finally:
            registry.stop()
            engine.stop()
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "arch": platform.machine(),
            "python": platform.python_version(),
            "postgresql": postgres,
            "compose": _version(["docker", "compose", "version", "--short"]),
            "load_average_at_end": os.getloadavg(),
        },
        "database_bytes": database_bytes,
        "ready": ready,
        "idle": idle,
        "polls": polls,
        "during_cli_backup": cli_backup,
        "during_daemon_upgrade": upgrade,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
