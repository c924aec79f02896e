"""``specivod run`` on the real sandbox stack: start to READY, idle RSS and CPU, RSS over 1,000
registry polls, and ``/metrics`` latency under 20 and 200 concurrent scrapers — idle, while a
``specivod backup`` CLI process dumps a ~1.2 GiB database, and while the daemon itself runs an
upgrade whose backup step dumps it (the event loop under test).

Every daemon is the real ``python -m specivod run`` process with a NOTIFY_SOCKET bound here (READY
is timed from just before exec to the READY=1 datagram) and systemd's WatchdogSec=60. Idle
daemons have a closed maintenance window. RSS is VmRSS from /proc/PID/status, CPU utime+stime
from /proc/PID/stat (the daemon's own; its docker compose children are reported apart). Latency
is per request from an aiohttp client in this process, keep-alive connections, one scrape loop
per scraper; every round is repeated with ApacheBench (``ab -k``, a C client), whose numbers
show what the Python client adds. The machine is shared: the load average is recorded.

Writes bench/results/daemon.json. Run: ``.venv/bin/python -m bench.daemon`` (overrides:
``BENCH_IDLE_SECONDS`` (600), ``BENCH_POLLS`` (1000), ``BENCH_DB_MB`` (1230), ``BENCH_STARTS`` (5);
``BENCH_PHASES=ready,polls`` runs only those phases and updates them in the existing results).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.backup_dump import _build_images, fill_to
from bench.daemon_kit import ROOT, config_for, scrape_while, start, usage
from sandbox.deployment import SandboxDeployment, create_deployment
from sandbox.dockerd import start_engine
from sandbox.images import ImageNames
from tests.support.registry import start_registry

IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "600"))
POLLS = int(os.environ.get("BENCH_POLLS", "1000"))
DB_MB = int(os.environ.get("BENCH_DB_MB", "1230"))
STARTS = int(os.environ.get("BENCH_STARTS", "5"))
ALL_PHASES = ("ready", "idle", "polls", "cli_backup", "daemon_upgrade")
PHASES = os.environ.get("BENCH_PHASES", ",".join(ALL_PHASES)).split(",")
SAMPLE_EVERY = 10.0
RESULTS = Path(__file__).parent / "results" / "daemon.json"


def measure_ready(deployment: SandboxDeployment, root: Path) -> dict[str, Any]:
    """Wall time from exec to READY=1, and the CPU time the daemon used to get there (which
    does not depend on what else the machine runs)."""
    runs, cpu = [], []
    for _ in range(STARTS):
        config, listen = config_for(deployment, root, "6h", window_open=False)
        daemon = start(config, listen, root)
        runs.append(round(daemon.ready_seconds(), 3))
        cpu.append(daemon.notify.cpu_at_ready or 0.0)
        daemon.stop()
    print(f"READY: {runs}, CPU {cpu}, load {os.getloadavg()}", flush=True)
    return {
        "runs_seconds": runs,
        "median_seconds": statistics.median(runs),
        "cpu_seconds_to_ready": cpu,
        "median_cpu_seconds_to_ready": statistics.median(cpu),
        "load_average": os.getloadavg(),
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


def run_phases(deployment: SandboxDeployment, scratch: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "ready" in PHASES:
        results["ready"] = measure_ready(deployment, scratch)
    if "idle" in PHASES:
        results["idle"], results["database_bytes"] = measure_idle(deployment, scratch)
    elif {"cli_backup", "daemon_upgrade"} & set(PHASES):
        results["database_bytes"] = fill_to(deployment, DB_MB)
    if "polls" in PHASES:
        results["polls"] = measure_polls(deployment, scratch)
    if "cli_backup" in PHASES:
        results["during_cli_backup"] = measure_cli_backup(deployment, scratch)
    if "daemon_upgrade" in PHASES:
        results["during_daemon_upgrade"] = measure_daemon_upgrade(deployment, scratch)
    results["postgresql"] = deployment.psql("SHOW server_version")
    return results


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
                measured = run_phases(deployment, scratch)
            finally:
                deployment.down()
        finally:
            registry.stop()
            engine.stop()
    partial = set(PHASES) != set(ALL_PHASES) and RESULTS.exists()
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if partial else {}
    results["machine"] = {
        "cpus": os.cpu_count(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "postgresql": measured.pop("postgresql"),
        "compose": _version(["docker", "compose", "version", "--short"]),
        "load_average_at_end": os.getloadavg(),
    }
    results.update(measured)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
