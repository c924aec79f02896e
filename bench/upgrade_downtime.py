"""Downtime of an upgrade, measured on the real sandbox stack while probing the api every 50 ms.

Side by side, in one run, each on a fresh deployment at 0.1.10:
- ``specivod``: ``specivod upgrade --now --to 0.1.11`` (backup, pull, pin, up -d, verify);
- ``by hand``: the same backup (``pg_dump -Fc`` and a tar of the data dir), ``docker compose
  pull``, ``.env`` edited, ``docker compose up -d``;
- ``floor``: ``docker compose up -d --force-recreate`` of the running version (nothing can be
  faster than recreating the container).
And the rollback: from the moment the never-healthy 0.2.1 is started to 0.1.10 answering again.

Every outage counts: the probe records each interval in which the api did not answer (from the
first failed probe to the next answered one), and a round reports their total and their number,
so an upgrade that takes the api down twice is not measured by its first outage alone.

Writes bench/results/upgrade_downtime.json. Run: ``.venv/bin/python -m bench.upgrade_downtime``;
``--dry`` checks the probe against a local server taken down twice, without Docker.
"""

from __future__ import annotations

import http.server
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sandbox.config import (
    HEALTH_INTERVAL_SECONDS,
    HEALTH_RETRIES,
    specivod_config,
    write_config,
)
from sandbox.deployment import SandboxDeployment, create_deployment
from sandbox.dockerd import start_engine
from sandbox.images import ImageNames, build_and_push
from sandbox.releases import BASELINE, MIGRATES_THEN_FAILS, NEVER_HEALTHY
from tests.support.registry import start_registry

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
PROBE_INTERVAL = 0.05
TARGET = "0.1.11"
ROLLBACK_MEASURES = ("rollback_from_broken_start", "rollback_from_up")
RESTORING_MEASURES = ("restoring_rollback_from_broken_start", "restoring_rollback_from_up")
PARTS = (
    ("verifying", "verifying", "rolling_back"),
    ("checks_while_serving", "rolling_back", "stopping"),
    ("stop_and_fingerprint", "stopping", None),
    ("safety_backup", "safety_backup", "restoring"),
    ("restore", "restoring", "restarting"),
    ("restart_and_verify", "restarting", "rolled_back"),
)
"""Each part of a rollback: from the step that starts it to the next one (``None``: whichever
comes next), from the journal's timestamps."""
RESULTS = Path(__file__).parent / "results" / "upgrade_downtime.json"


@dataclass(frozen=True)
class Outage:
    """``start``: the first failed probe; ``end``: the next answered one (or the last probe, with
    ``ended`` false, when the api was still down when probing stopped)."""

    start: float
    end: float
    ended: bool = True

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Measured:
    """One round of one method: every outage, in order."""

    outages: list[Outage]

    @property
    def downtime(self) -> float:
        return sum(outage.seconds for outage in self.outages)


@dataclass
class Probe:
    """Polls the api's /healthz every 50 ms from a thread, recording (time, ok)."""

    port: int
    samples: list[tuple[float, bool]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        url = f"http://127.0.0.1:{self.port}/healthz"
        while not self._stop.is_set():
            started = time.time()
            try:
                with urllib.request.urlopen(url, timeout=0.5) as response:
                    ok = response.status == 200
            except OSError:
                ok = False
            self.samples.append((started, ok))
            self._stop.wait(max(0.0, PROBE_INTERVAL - (time.time() - started)))

    def __enter__(self) -> Probe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def outages(self, after: float = 0.0) -> list[Outage]:
        """Every interval without an answer, among the probes started at or after ``after``."""
        found: list[Outage] = []
        down_since: float | None = None
        samples = [(t, ok) for t, ok in self.samples if t >= after]
        for moment, ok in samples:
            if not ok and down_since is None:
                down_since = moment
            elif ok and down_since is not None:
                found.append(Outage(down_since, moment))
                down_since = None
        if down_since is not None:
            found.append(Outage(down_since, samples[-1][0], ended=False))
        return found

    def measured(self, after: float = 0.0) -> Measured:
        return Measured(self.outages(after))


def _specivod(config: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
    return subprocess.run(
        [sys.executable, "-m", "specivod", "--config", str(config), *arguments],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )


def _wait_stable(deployment: SandboxDeployment, version: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if deployment.running_version() == version:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{version} did not come up")


def by_specivod(deployment: SandboxDeployment, root: Path) -> Measured:
    config = write_config(root / "specivod.toml", specivod_config(deployment, root))
    with Probe(deployment.api_port) as probe:
        result = _specivod(config, "upgrade", "--now", "--to", TARGET)
        _wait_stable(deployment, TARGET)
    if result.returncode != 0:
        raise RuntimeError(result.stdout + result.stderr)
    return probe.measured()


def by_hand(deployment: SandboxDeployment, root: Path) -> Measured:
    with Probe(deployment.api_port) as probe:
        with (root / "dump.pgc").open("wb") as dump:
            subprocess.run(
                [
                    "docker",
                    "compose",
                    "exec",
                    "-T",
                    "db",
                    "pg_dump",
                    "-Fc",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "specivo",
                    "specivo",
                ],
                cwd=deployment.directory,
                stdout=dump,
                check=True,
            )
        with tarfile.open(root / "data.tar", "w") as archive:
            archive.add(deployment.data_dir, "data")
        subprocess.run(
            ["docker", "compose", "pull", "--quiet"],
            cwd=deployment.directory,
            check=True,
            env={**os.environ, "SPECIVO_VERSION": TARGET},
        )
        env = deployment.env_file.read_text()
        deployment.env_file.write_text(env.replace(f"={BASELINE}\n", f"={TARGET}\n"))
        subprocess.run(
            ["docker", "compose", "up", "-d"],
            cwd=deployment.directory,
            check=True,
            capture_output=True,
        )
        _wait_stable(deployment, TARGET)
    return probe.measured()


def stop_seconds(deployment: SandboxDeployment) -> float:
    """One ``docker compose stop api``: the stop a rollback adds to the floor's recreate."""
    started = time.monotonic()
    subprocess.run(
        ["docker", "compose", "stop", "api"],
        cwd=deployment.directory,
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def floor(deployment: SandboxDeployment, root: Path) -> Measured:
    with Probe(deployment.api_port) as probe:
        subprocess.run(
            ["docker", "compose", "up", "-d", "--force-recreate", "api"],
            cwd=deployment.directory,
            check=True,
            capture_output=True,
        )
        _wait_stable(deployment, BASELINE)
    return probe.measured()


def rollback_time(
    deployment: SandboxDeployment, root: Path, release: str = NEVER_HEALTHY
) -> tuple[tuple[float, float], Measured, dict[str, float]]:
    """Seconds until the old version answers again for good, counted from the broken release's
    start (the first failed probe: compose stopped the old container to start the new one) and,
    more strictly, from the STARTING step in the journal (before ``docker compose up -d``); and
    every outage from that step on."""
    settings = specivod_config(deployment, root)
    config = write_config(root / "specivod.toml", settings)
    with Probe(deployment.api_port) as probe:
        result = _specivod(config, "upgrade", "--now", "--to", release)
        _wait_stable(deployment, BASELINE)
    if result.returncode != 1:
        raise RuntimeError(result.stdout + result.stderr)
    transaction = json.loads(_specivod(config, "status", "--json").stdout)["transaction"]
    if transaction["state"] != "rolled_back":
        raise RuntimeError(f"expected a rollback, got {transaction['state']}")
    steps = {step["state"]: step["at"] for step in transaction["steps"]}
    started = datetime.fromisoformat(steps["starting"]).timestamp()
    parts = _parts([step["state"] for step in transaction["steps"]], steps)
    measured = probe.measured(after=started)
    if not measured.outages or not measured.outages[-1].ended:
        raise RuntimeError("the old version never answered again")
    back = measured.outages[-1].end
    return (back - measured.outages[0].start, back - started), measured, parts


def _parts(order: list[str], at: dict[str, str]) -> dict[str, float]:
    moments = {state: datetime.fromisoformat(stamp).timestamp() for state, stamp in at.items()}
    parts: dict[str, float] = {}
    for name, first, last in PARTS:
        if first not in moments:
            continue
        following = last or order[order.index(first) + 1]
        parts[name] = round(moments[following] - moments[first], 3)
    return parts


@contextmanager
def _fresh(workdir: Path, images: ImageNames) -> Iterator[tuple[SandboxDeployment, Path]]:
    workdir.mkdir()
    deployment = create_deployment(workdir, images)
    try:
        yield deployment, workdir
    finally:
        deployment.down()


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="specivod-bench-"))
    engine = start_engine(root / "dockerd.log")
    registry = start_registry(root / "registry")
    methods = {"specivod": by_specivod, "by_hand": by_hand, "floor": floor}
    measures = [*methods, *ROLLBACK_MEASURES, *RESTORING_MEASURES, "stop"]
    runs: dict[str, list[float]] = {name: [] for name in measures}
    outages: dict[str, list[list[float]]] = {
        name: [] for name in [*methods, "rollback", "restoring_rollback"]
    }
    parts: dict[str, dict[str, list[float]]] = {"rollback": {}, "restoring_rollback": {}}
    try:
        images: ImageNames = build_and_push(engine.client, registry.address)
        for round_number in range(ROUNDS):
            for name, method in methods.items():
                with _fresh(root / f"{name}-{round_number}", images) as (deployment, workdir):
                    measured = method(deployment, workdir)
                runs[name].append(measured.downtime)
                outages[name].append([outage.seconds for outage in measured.outages])
                print(f"round {round_number + 1}: {name} {_said(measured)}", flush=True)
            with _fresh(root / f"stop-{round_number}", images) as (deployment, _workdir):
                runs["stop"].append(stop_seconds(deployment))
            for kind, release, names in (
                ("rollback", NEVER_HEALTHY, ROLLBACK_MEASURES),
                ("restoring_rollback", MIGRATES_THEN_FAILS, RESTORING_MEASURES),
            ):
                with _fresh(root / f"{kind}-{round_number}", images) as (deployment, workdir):
                    seconds, measured, found = rollback_time(deployment, workdir, release)
                for name, value in zip(names, seconds, strict=True):
                    runs[name].append(value)
                outages[kind].append([outage.seconds for outage in measured.outages])
                for part, value in found.items():
                    parts[kind].setdefault(part, []).append(value)
                print(
                    f"round {round_number + 1}: {kind} {seconds[0]:.2f}s, {_said(measured)}, "
                    f"parts {found}",
                    flush=True,
                )
    finally:
        registry.stop()
        engine.stop()
    medians = {name: statistics.median(values) for name, values in runs.items()}
    budget = float(HEALTH_RETRIES * HEALTH_INTERVAL_SECONDS)
    summary = {
        "rounds": ROUNDS,
        "probe_interval_seconds": PROBE_INTERVAL,
        "runs_seconds": runs,
        "median_seconds": medians,
        "outages_seconds": outages,
        "outages_per_round": {
            name: [len(found) for found in rounds] for name, rounds in outages.items()
        },
        "specivod_over_floor": medians["specivod"] / medians["floor"] if medians["floor"] else None,
        "by_hand_over_floor": medians["by_hand"] / medians["floor"] if medians["floor"] else None,
        "rollback_budget_seconds": budget,
        "rollback_parts_median_seconds": {
            kind: {part: statistics.median(values) for part, values in found.items()}
            for kind, found in parts.items()
        },
        "rollback_target_seconds": budget + medians["stop"] + medians["floor"],
        "rollback_within_target": {
            name: medians[name] <= budget + medians["stop"] + medians["floor"]
            for name in ROLLBACK_MEASURES
        },
    }
    restoring = summary["rollback_parts_median_seconds"]["restoring_rollback"]  # type: ignore[index]
    restoring_target = (
        budget + restoring.get("safety_backup", 0.0) + restoring.get("restore", 0.0)
    ) + medians["floor"]
    summary["restoring_rollback_target_seconds"] = restoring_target
    summary["restoring_rollback_within_target"] = {
        name: medians[name] <= restoring_target for name in RESTORING_MEASURES
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


def _said(measured: Measured) -> str:
    count = len(measured.outages)
    return f"{measured.downtime:.2f}s down in {count} outage{'s' if count != 1 else ''}"


def dry_run() -> int:
    """The probe against a local server that stops answering twice: two outages, both counted."""

    class Switch(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if serving.is_set() else 503)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    serving = threading.Event()
    serving.set()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Switch)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Probe(server.server_address[1]) as probe:
            for pause in (0.3, 0.3, 0.5, 0.3):
                time.sleep(pause)
                if serving.is_set():
                    serving.clear()
                else:
                    serving.set()
            time.sleep(0.3)
    finally:
        server.shutdown()
    measured = probe.measured()
    print(f"dry run: {_said(measured)}")
    ok = len(measured.outages) == 2 and all(outage.ended for outage in measured.outages)
    return 0 if ok and 0.5 <= measured.downtime <= 0.9 else 1


if __name__ == "__main__":
    sys.exit(dry_run() if sys.argv[1:] == ["--dry"] else main())
