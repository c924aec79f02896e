"""Soak: ``specivod run`` upgrading and rolling back in a loop on the real stack, with its RSS,
open file descriptors and journal size sampled from outside (issue 13, item 9).

Rule: one cycle is what the daemon really does unattended. A new healthy release is published
(its tag PUT over the baseline's manifest in a registry of this script's own), the daemon polls,
plans it and installs it inside an always-open window (backup, pull, pin, up, health, smoke),
then an Alertmanager v4 webhook delivery (the real bearer token) with a new firing alert makes it
roll that upgrade back (image only: the schema did not change), and two more deliveries of the
same alert are answered as duplicates. The rolled-back version is never a target again, so the
next cycle publishes the next patch (so the tag list and the rolled-back versions grow by one a
cycle, as they would over a long life). Every ``SAMPLE_EVERY`` seconds: VmRSS, VmHWM, CPU,
threads, open fds (/proc/PID), the journal's bytes (and its WAL's), the daemon's log bytes, and
the median and max latency of a /healthz probe every 0.25 s (bench/soak_kit.py); after each
cycle, the RSS and fds at the same point (idle, deployed back to the baseline). The slope of each
is a least-squares line in units per hour, over the whole run and over its second half.

Writes bench/results/soak-<date>T<HHMM>-<minutes>m.json (the run's start, UTC). Run:
``.venv/bin/python -m bench.soak`` (``BENCH_SOAK_SECONDS``: 1800). The docker engine is the
running one (sandbox.dockerd rules).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.daemon_kit import ALWAYS, Daemon, start
from bench.soak_kit import Prober, per_cycle, sample, trend
from sandbox.config import specivod_config, write_config
from sandbox.deployment import COMPOSE_FILE, SandboxDeployment, create_deployment
from sandbox.dockerd import start_engine
from sandbox.images import ImageNames, build_and_push, push_releases
from sandbox.releases import Behaviour, Release
from tests.e2e.test_daemon_real import retag
from tests.support import alertmanager
from tests.support.ports import free_port
from tests.support.registry import start_registry

SECONDS = float(os.environ.get("BENCH_SOAK_SECONDS", "1800"))
MINUTES = round(SECONDS / 60)
STARTED = datetime.now(UTC)
SAMPLE_EVERY = 20.0
STEP_TIMEOUT = 600.0
REPOSITORY = "specivo-soak/specivo"
BASELINE = "1.0.0"
TERMINAL = ("succeeded", "rolled_back", "aborted", "rollback_failed")
RESULTS = Path(__file__).parent / "results"
TOKEN = uuid.uuid4().hex
SAMPLED = (
    "rss_bytes",
    "fds",
    "threads",
    "journal_bytes",
    "journal_wal_bytes",
    "log_bytes",
    "cpu_percent",
    "healthz_p50_ms",
    "healthz_max_ms",
)


def wait_transaction(daemon: Daemon, kind: str, after: int, to: str | None) -> dict[str, Any]:
    """The first finished transaction of ``kind`` newer than ``after`` (and going to ``to``)."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        status = daemon.status()
        found = status["transaction"]
        if (
            found is not None
            and found["id"] > after
            and found["kind"] == kind
            and (to is None or found["to"] == to)
            and found["state"] in TERMINAL
            and not status["in_progress"]
        ):
            return dict(found)
        if daemon.process.poll() is not None:
            raise RuntimeError(f"the daemon exited {daemon.process.returncode}")
        time.sleep(1)
    raise RuntimeError(f"no finished {kind} to {to} after {STEP_TIMEOUT:.0f}s: {daemon.status()}")


def deliver_alert(daemon: Daemon, fingerprint: str, started: datetime) -> int:
    labels = {"alertname": "SpecivoDown", "severity": "critical", "soak": fingerprint}
    payload = alertmanager.delivery(
        alertmanager.alert(started=started, fingerprint=fingerprint, labels=labels, annotations={})
    )
    request = urllib.request.Request(  # noqa: S310 (our own http URL)
        f"{daemon.base}/api/v1/alertmanager",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (our own http URL)
        return int(answer.status)


def cycle(daemon: Daemon, registry: str, number: int, last_id: int) -> dict[str, Any]:
    version = f"1.0.{number}"
    began = time.monotonic()
    retag(registry, REPOSITORY, BASELINE, version)
    upgrade = wait_transaction(daemon, "upgrade", last_id, version)
    result: dict[str, Any] = {
        "version": version,
        "upgrade": upgrade["state"],
        "upgrade_seconds": upgrade["duration_seconds"],
        "seconds_from_push_to_upgraded": round(time.monotonic() - began, 1),
        "last_id": upgrade["id"],
    }
    if upgrade["state"] != "succeeded":
        return result
    fingerprint = uuid.uuid4().hex[:16]
    fired = datetime.now(UTC)
    result["webhook_statuses"] = [deliver_alert(daemon, fingerprint, fired) for _ in range(3)]
    rollback = wait_transaction(daemon, "rollback", upgrade["id"], None)
    result.update(
        rollback=rollback["state"],
        rolled_back_to=rollback["to"],
        rollback_seconds=rollback["duration_seconds"],
        rollback_trigger=rollback["trigger"],
        cycle_seconds=round(time.monotonic() - began, 1),
        last_id=rollback["id"],
    )
    return result


@dataclass
class Run:
    began: float = field(default_factory=time.monotonic)
    samples: list[dict[str, Any]] = field(default_factory=list)
    cycles: list[dict[str, Any]] = field(default_factory=list)
    after_cycle: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None


def cycles_until_time_is_up(daemon: Daemon, registry: str, root: Path, run: Run) -> None:
    """Cycles for ``SECONDS`` while a thread samples; stops at the first cycle that does not
    end rolled back (``run.problem`` says why)."""
    done = threading.Event()
    prober = Prober(f"{daemon.base}/healthz")

    def sampler() -> None:
        while not done.wait(SAMPLE_EVERY if run.samples else 0):
            now = sample(daemon, root, run.began, len(run.cycles))
            if run.samples:
                cpu = now["cpu_seconds"] - run.samples[-1]["cpu_seconds"]
                now["cpu_percent"] = round(
                    100 * cpu / (now["seconds"] - run.samples[-1]["seconds"]), 2
                )
            run.samples.append({**now, **prober.take()})
            print(f"sample {run.samples[-1]}", flush=True)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    last_id = 0
    try:
        while time.monotonic() - run.began < SECONDS:
            one = cycle(daemon, f"http://{registry}", len(run.cycles) + 1, last_id)
            last_id = one.pop("last_id")
            run.cycles.append(one)
            run.after_cycle.append(sample(daemon, root, run.began, len(run.cycles)))
            print(f"cycle {len(run.cycles)}: {one}", flush=True)
            if one.get("rollback") != "rolled_back":
                run.problem = f"cycle {len(run.cycles)} did not end rolled back: {one}"
                return
    except (RuntimeError, OSError) as error:
        run.problem = f"{type(error).__name__}: {error}"
    finally:
        done.set()
        thread.join()
        prober.stop()


def summary(run: Run) -> dict[str, Any]:
    return {
        "seconds": round(time.monotonic() - run.began, 1),
        "cycles_done": len(run.cycles),
        "problem": run.problem,
        **{key: trend(run.samples, key) for key in SAMPLED},
        "after_each_cycle": {
            "rss_bytes": trend(run.after_cycle, "rss_bytes"),
            "fds": trend(run.after_cycle, "fds"),
            "rss_bytes_per_cycle": per_cycle(run.after_cycle, "rss_bytes"),
            "journal_bytes_per_cycle": per_cycle(run.after_cycle, "journal_bytes"),
        },
        "cycles": run.cycles,
        "samples": run.samples,
        "samples_after_each_cycle": run.after_cycle,
    }


def soak(deployment: SandboxDeployment, registry: str, root: Path) -> dict[str, Any]:
    listen = f"127.0.0.1:{free_port()}"
    (root / "webhook.token").write_text(TOKEN + "\n")
    config = specivod_config(
        deployment,
        root,
        registry={"image": deployment.images.app, "timeout": "10s", "poll_interval": "2s"},
        policy={"range": ">=1.0.0 <2.0.0", "expected_duration": "10m"},
        window=[{"days": ALWAYS, "start": "00:00", "end": "00:00", "timezone": "UTC"}],
        http={"listen": listen, "token_file": str(root / "webhook.token")},
        alertmanager={"matchers": ['alertname="SpecivoDown"'], "watch_period": "1h"},
        backup={"dir": str(root / "backups"), "keep": 2, "min_free_bytes": "10MB"},
    )
    rows_before, data_before = deployment.table_checksum(), deployment.data_hashes()
    daemon = start(write_config(root / "specivod.toml", config), listen, root)
    deployed = None
    try:
        daemon.ready_seconds()
        run = Run()
        cycles_until_time_is_up(daemon, registry, root, run)
        if daemon.process.poll() is None:
            run.samples.append(sample(daemon, root, run.began, len(run.cycles)))
            deployed = daemon.status()["deployed"]
            daemon.stop()
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()
    return {
        **summary(run),
        "daemon_exit": daemon.process.returncode,
        "deployed_at_end": deployed,
        "api_healthy_at_end": deployment.api("/healthz")[0] == 200,
        "rows_unchanged": deployment.table_checksum() == rows_before,
        "data_files_unchanged": deployment.data_hashes() == data_before,
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="specivod-bench-soak-") as directory:
        scratch = Path(directory)
        engine = start_engine(scratch / "dockerd.log")
        registry = start_registry(scratch / "registry")
        try:
            build_and_push(engine.client, registry.address, [])
            names = ImageNames(registry.address, REPOSITORY)
            push_releases(engine.client, names, [Release(BASELINE, Behaviour.HEALTHY, 1)])
            compose_file = COMPOSE_FILE.replace("/specivo/specivo:", f"/{REPOSITORY}:")
            deployment = create_deployment(scratch, names, BASELINE, compose_file=compose_file)
            try:
                measured = soak(deployment, registry.address, scratch)
            finally:
                deployment.down()
                kept = Path(tempfile.gettempdir()) / f"soak-{MINUTES}m"
                shutil.rmtree(kept, ignore_errors=True)
                kept.mkdir()
                for path in [scratch / "daemon.log", *(scratch / "state").glob("journal*")]:
                    if path.exists():
                        shutil.copy2(path, kept)
        finally:
            registry.stop()
            engine.stop()
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
        "sample_every_seconds": SAMPLE_EVERY,
        "setup": "poll_interval 2s, always-open window, backup.keep 2, health 12 x 1s + smoke; "
        "each release a new tag over the baseline's manifest; 3 webhook deliveries per cycle",
        **measured,
    }
    path = RESULTS / f"soak-{STARTED:%Y-%m-%dT%H%M}-{MINUTES}m.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
