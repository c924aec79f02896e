"""Crash of the whole host's software in the middle of an upgrade, 20 times in a row (issue 13,
item 4, the script part; not in the test command).

Each run: a fresh sandbox deployment (200 rows, a data dir with files) on a Docker Engine of its
own (``tests/support/own_dockerd.py``), ``specivod upgrade --now`` to a healthy release or to one
that migrates the schema and the data dir and then never gets healthy, alternately. At a random
moment of the upgrade (stratified over the upgrade's measured length) every process of that
host's software is frozen with SIGSTOP, then killed with SIGKILL: specivod and its children,
dockerd, its containerd, every containerd-shim of that containerd and every container process.
Then the boot: dockerd started again, whose restart policies bring the containers back (db and
api are ``restart: unless-stopped``, as in production compose files; no ``docker compose up``),
and ``specivod recover``, as the daemon does when systemd starts it after docker.service.
Checks: one transaction, terminal and not ROLLBACK_FAILED; the api healthy at the version the
outcome says; every row and data file as before (after a SUCCEEDED upgrade to the healthy release:
the issues' ids, titles and bodies as before, plus its own migration, by design); every backup
valid. ``--boot compose``: the operator's boot also runs ``docker compose up -d`` (as a compose
systemd unit would) before ``specivod recover``, so the containers follow what ``.env`` pins.

Writes bench/results/host_crash-BOOT-DATE.json. Run as root:
``.venv/bin/python -m bench.host_crash [--runs N] [--boot policy|compose] [--at-states]
[--states restoring,stopping]``. A failed run keeps its directory (printed at the end) as
evidence.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox.config import specivod_config, write_config
from sandbox.deployment import COMPOSE_FILE, SandboxDeployment, create_deployment
from sandbox.images import ImageNames, build_and_push, forget
from sandbox.releases import BASELINE, BY_VERSION, HEALTHY_UPGRADE, MIGRATES_THEN_FAILS
from tests.support.own_dockerd import OwnDockerd
from tests.support.registry import start_registry

ROOT = Path(__file__).parent.parent
RESULTS = Path(__file__).parent / "results"
TARGETS = (HEALTHY_UPGRADE, MIGRATES_THEN_FAILS)
HEALTHY_AFTER_BOOT_SECONDS = 120
STEP_LINE = re.compile(r"\[\d\d:\d\d:\d\d\] ([A-Z_]+) ")
ISSUES_DIGEST = (
    "SELECT count(*) || ':' || md5(string_agg(id || '|' || title || '|' || body, '/' ORDER BY id))"
    " FROM issues"
)
BOOTS = {
    "policy": "dockerd started again; its restart policies (db and api restart: unless-stopped) "
    "start the containers, no docker compose up; then specivod recover",
    "compose": "dockerd started again (restart policies as in policy), then docker compose up -d "
    "in the project (an operator's boot unit), then specivod recover",
}
NOT_COVERED = [
    "Power loss: every process here is killed, but the kernel survives, so the page cache "
    "survives too: data written but not yet fsynced still reaches the disk. A real power cut "
    "loses it. What holds then rests on fsync: the journal (SQLite, synchronous commit), the "
    "dump and .env (fsynced before rename, directory fsynced), PostgreSQL's WAL; this script "
    "cannot tell a missing fsync apart from a present one.",
    "A kernel crash, torn sector writes, and file systems or disks that lie about flushes.",
    "Reboot itself: mounts, /run (tmpfs) and network namespaces survive here; a real boot "
    "starts with an empty /run and the engine's exec-root gone.",
    "The daemon (specivod run) as the crashed process: the killed process is the CLI "
    "(specivod upgrade --now); recovery is the CLI's specivod recover, the same engine "
    "call the daemon makes at start.",
    "Registry and systemd: the registry stays up; no unit ordering is exercised.",
]


@dataclass
class Run:
    number: int
    target: str
    delay_seconds: float | None
    """Seconds from the upgrade's start to the crash; ``None``: no crash (the calibration)."""
    boot: str = "policy"
    at_state: str | None = None
    """With ``--at-states``: the delay counts from the moment the upgrade printed this step."""
    killed_in: str | None = None
    killed_step: str | None = None
    killed_pids: int = 0
    upgrade_exit: int | None = None
    boot_seconds: float | None = None
    recover_seconds: float | None = None
    recover_exit: int | None = None
    healthy_after_boot_seconds: float | None = None
    outcome: str | None = None
    version: str | None = None
    problems: list[str] = field(default_factory=list)
    evidence: str | None = None
    boot_started: float = 0.0
    self_check: list[str] = field(default_factory=list)
    """Uninterrupted runs: what the checks found after a row and a file were changed by hand."""


def _specivod(
    config: Path, *arguments: str, stderr: Any = subprocess.PIPE
) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
    return subprocess.Popen(
        [sys.executable, "-m", "specivod", "--config", str(config), *arguments],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=environment,
        cwd=ROOT,
    )


def _specivod_json(config: Path, *arguments: str) -> dict[str, Any]:
    process = _specivod(config, *arguments, "--json")
    out, err = process.communicate(timeout=120)
    if process.returncode not in (0, 4):
        raise RuntimeError(f"specivod {' '.join(arguments)} --json: {err}")
    result: dict[str, Any] = json.loads(out)
    return result


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: pid → (parent pid, command line)."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        table[int(entry.name)] = (int(stat.rpartition(")")[2].split()[1]), command)
    return table


def _descendants(roots: set[int], table: dict[int, tuple[int, str]]) -> set[int]:
    found = set(roots) & set(table)
    while True:
        more = {pid for pid, (parent, _) in table.items() if parent in found} - found
        if not more:
            return found
        found |= more


def host_software(specivod_pid: int, engine: OwnDockerd) -> set[int]:
    """specivod and its children, dockerd and its containerd, this containerd's shims (found by
    its address) and every process they run (the containers')."""
    table = _processes()
    address = str(engine.containerd_socket)
    shims = {
        pid for pid, (_, line) in table.items() if "containerd-shim" in line and address in line
    }
    roots = {specivod_pid, *shims, *([engine.pid] if engine.pid is not None else [])}
    return _descendants(roots, table)


def crash(specivod: subprocess.Popen[str], engine: OwnDockerd) -> int:
    """Freeze everything first (so nothing reacts to another's death), then SIGKILL it all;
    the number of processes killed."""
    containerd = engine.containerd_pid()
    stopped: set[int] = set()
    while found := host_software(specivod.pid, engine) - stopped:
        for pid in found:
            _signal(pid, signal.SIGSTOP)
        stopped |= found
    for pid in stopped:
        _signal(pid, signal.SIGKILL)
    if engine.process is not None:
        engine.process.wait()
    deadline = time.monotonic() + 30
    # a dockerd started before its old containerd's zombie is reaped adopts it (own_dockerd.kill)
    while any(_alive(pid) for pid in stopped) or (
        containerd is not None and Path(f"/proc/{containerd}").exists()
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("killed processes did not go away")
        time.sleep(0.05)
    return len(stopped)


def _signal(pid: int, number: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, number)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


class Watched:
    """The upgrade's stdout read as it comes: when each step's line (``[12:00:00] PULLING ...``)
    appeared."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.seen: dict[str, float] = {}
        self._ended = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._changed:
                self.lines.append(line)
                if found := STEP_LINE.match(line):
                    self.seen.setdefault(found[1].lower(), time.monotonic())
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, state: str, timeout: float) -> bool:
        with self._changed:
            self._changed.wait_for(lambda: state in self.seen or self._ended, timeout)
            return state in self.seen

    def join(self) -> None:
        self._thread.join()


@dataclass(frozen=True)
class Before:
    rows: str
    issues: str
    files: dict[str, str]
    env: bytes


def _healthy(deployment: SandboxDeployment, version: str) -> bool:
    state = deployment.api_container().get("State")
    health = state.get("Health", {}).get("Status") if isinstance(state, dict) else None
    return health == "healthy" and deployment.running_version() == version


def check(deployment: SandboxDeployment, config: Path, before: Before, run: Run) -> None:
    """Fill ``run.outcome``, ``run.version`` and ``run.problems`` from the journal and the
    deployment. No transaction at all is right only when specivod died before journaling one."""
    transactions = _specivod_json(config, "history")["transactions"]
    if len(transactions) > 1 or (not transactions and run.killed_in is not None):
        run.problems.append(f"{len(transactions)} transactions in the journal, not 1")
    run.outcome = str(transactions[0]["state"]) if transactions else "never_begun"
    if run.outcome not in ("succeeded", "rolled_back", "aborted", "never_begun"):
        run.problems.append(f"the transaction ended {run.outcome}")
    expected = run.target if run.outcome == "succeeded" else BASELINE
    while not _healthy(deployment, expected):
        if time.monotonic() - run.boot_started > HEALTHY_AFTER_BOOT_SECONDS:
            run.problems.append(f"the api is not healthy at {expected}")
            return
        time.sleep(0.2)
    run.healthy_after_boot_seconds = round(time.monotonic() - run.boot_started, 2)
    run.version = expected
    pinned = _specivod_json(config, "status")["deployed"]
    if pinned != expected:
        run.problems.append(f".env pins {pinned}, the api runs {expected}")
    if expected == BASELINE:
        if deployment.env_file.read_bytes() != before.env:
            run.problems.append(".env is not byte-identical to before")
        if deployment.table_checksum() != before.rows:
            run.problems.append("rows differ from before the upgrade")
    if deployment.psql(ISSUES_DIGEST) != before.issues:
        run.problems.append("the issues' ids, titles or bodies differ from before")
    if deployment.data_hashes() != before.files:
        run.problems.append("data files differ from before the upgrade")
    if not all(backup["valid"] for backup in _specivod_json(config, "backups")["backups"]):
        run.problems.append("an invalid backup is listed")


def self_check(deployment: SandboxDeployment, config: Path, before: Before, run: Run) -> None:
    """The checks can fail: one body and one data file changed by hand must both be found."""
    deployment.psql("UPDATE issues SET body = body || '!' WHERE id = 1")
    with (deployment.data_dir / "FORMAT").open("a") as changed:
        changed.write("changed\n")
    tampered = Run(run.number, run.target, None, boot_started=time.monotonic())
    check(deployment, config, before, tampered)
    run.self_check = tampered.problems
    expected = {"the issues' ids, titles or bodies differ from before", "data files differ"}
    if not all(any(text in problem for problem in tampered.problems) for text in expected):
        run.problems.append(f"the checks missed a changed row or file: {tampered.problems}")


def boot(engine: OwnDockerd, deployment: SandboxDeployment, config: Path, run: Run) -> None:
    """dockerd again (its restart policies start the containers), with ``--boot compose`` the
    operator's ``docker compose up -d``, then ``specivod recover``."""
    run.boot_started = time.monotonic()
    engine.start()
    if run.boot == "compose":
        upped = deployment.compose("up", "-d", check=False)
        (config.parent / "boot-compose-up.log").write_text(upped.stdout + upped.stderr)
    run.boot_seconds = round(time.monotonic() - run.boot_started, 2)
    recovering = _specivod(config, "recover")
    out, err = recovering.communicate(timeout=600)
    run.recover_seconds = round(time.monotonic() - run.boot_started - run.boot_seconds, 2)
    run.recover_exit = recovering.returncode
    (config.parent / "recover.log").write_text(out + err)
    if recovering.returncode != 0:
        run.problems.append(f"specivod recover exited {recovering.returncode}: {err[-300:]}")


def one_run(run: Run, engine: OwnDockerd, images: ImageNames, root: Path) -> float:
    """Upgrade, crash after ``run.delay_seconds`` (never when it is ``None``), boot, check; the
    seconds the upgrade took when it ended before the crash."""
    workdir = root / (f"run-{run.number:02d}" if run.number > 0 else f"uninterrupted-{run.target}")
    workdir.mkdir()
    deployment = create_deployment(workdir, images, compose_file=RESTARTING_COMPOSE)
    config = write_config(workdir / "specivod.toml", specivod_config(deployment, workdir))
    before = Before(
        deployment.table_checksum(),
        deployment.psql(ISSUES_DIGEST),
        deployment.data_hashes(),
        deployment.env_file.read_bytes(),
    )
    started = time.monotonic()
    with (workdir / "upgrade.err").open("w") as errors:
        upgrading = _specivod(config, "upgrade", "--now", "--to", run.target, stderr=errors)
    watched = Watched(upgrading)
    moment = started
    if run.at_state is not None:
        if not watched.wait_for(run.at_state, timeout=300):
            run.problems.append(f"the upgrade never printed {run.at_state}")
        moment = watched.seen.get(run.at_state, time.monotonic())
    deadline = None if run.delay_seconds is None else moment + run.delay_seconds
    took = 0.0
    try:
        upgrading.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        took = time.monotonic() - started
    except subprocess.TimeoutExpired:
        pass
    if run.delay_seconds is not None:
        run.killed_pids = crash(upgrading, engine)
    watched.join()
    upgrading.wait()
    (workdir / "upgrade.log").write_text("".join(watched.lines))
    run.upgrade_exit = upgrading.returncode
    if run.delay_seconds is not None:
        status = _specivod_json(config, "status")
        run.killed_in, run.killed_step = status["state"], status["step"]
        boot(engine, deployment, config, run)
    else:
        run.boot_started = time.monotonic()
    check(deployment, config, before, run)
    if run.delay_seconds is None and not run.problems:
        self_check(deployment, config, before, run)
    if run.problems:
        run.evidence = str(workdir)
        logs = deployment.compose("logs", "--no-color", "--timestamps", check=False).stdout
        (workdir / "compose.log").write_text(logs)
    else:
        deployment.down()
        with contextlib.closing(engine.client()) as client:
            for version in (BASELINE, run.target):
                forget(client, f"{images.app}:{version}")
    return took


def _restarting_compose() -> str:
    """The sandbox compose file with ``restart: unless-stopped`` on the db as well."""
    db_start = "    network_mode: host\n    environment:\n      PGPORT"
    assert COMPOSE_FILE.count(db_start) == 1
    return COMPOSE_FILE.replace(
        db_start, db_start.replace("environment", "restart: unless-stopped\n    environment")
    )


RESTARTING_COMPOSE = _restarting_compose()


def plan(runs: int, spans: dict[str, float], rng: random.Random, boot: str) -> list[Run]:
    """Alternate targets; each target's kill moments drawn one per equal slice of its span,
    the slices in random order, so every part of the upgrade is hit."""
    targets = [TARGETS[number % len(TARGETS)] for number in range(runs)]
    delays: dict[str, list[float]] = {}
    for target in TARGETS:
        count = targets.count(target)
        slices = [
            rng.uniform(spans[target] * k / count, spans[target] * (k + 1) / count)
            for k in range(count)
        ]
        rng.shuffle(slices)
        delays[target] = slices
    return [
        Run(number + 1, target, round(delays[target].pop(), 2), boot)
        for number, target in enumerate(targets)
    ]


AT_STATES = {
    HEALTHY_UPGRADE: ("pulling", "pinned", "starting", "verifying"),
    MIGRATES_THEN_FAILS: (
        "starting",
        "rolling_back",
        "stopping",
        "safety_backup",
        "restoring",
        "restarting",
    ),
}
AT_STATE_DELAY = 1.0


def plan_states(runs: int, rng: random.Random, boot: str, only: set[str] | None) -> list[Run]:
    """Alternate targets; each target's runs go through its steps (``only`` those) in turn, the
    kill a random 0-1 s after the step's line appears (the short steps are rarely hit at
    random)."""
    choices = {t: [s for s in AT_STATES[t] if only is None or s in only] for t in TARGETS}
    targets = [target for target in TARGETS if choices[target]]
    planned = []
    for number in range(runs):
        target = targets[number % len(targets)]
        states = choices[target]
        state = states[(number // len(targets)) % len(states)]
        delay = round(rng.uniform(0, AT_STATE_DELAY), 2)
        planned.append(Run(number + 1, target, delay, boot, state))
    return planned


def summary(
    runs: list[Run],
    calibration: list[Run],
    spans: dict[str, float],
    arguments: argparse.Namespace,
) -> dict[str, Any]:
    recover = [run.healthy_after_boot_seconds for run in runs if run.healthy_after_boot_seconds]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_at_end": os.getloadavg()},
        "seed": arguments.seed,
        "revision": _revision(),
        "boot": BOOTS[arguments.boot],
        "kill_moments": (
            f"a random 0-{AT_STATE_DELAY} s after the upgrade printed each step in turn"
            f" ({', '.join(sorted(arguments.states)) if arguments.states else 'all steps'})"
            if arguments.at_states or arguments.states
            else "random, one per equal slice of the uninterrupted upgrade's length"
        ),
        "killed": "SIGSTOP to all, then SIGKILL to all: specivod and children, dockerd, "
        "containerd, every containerd-shim of that containerd, every container process",
        "upgrade_seconds_uninterrupted": spans,
        "uninterrupted": [{**asdict(run), "boot_started": None} for run in calibration],
        "runs": len(runs),
        "passed": sum(not run.problems for run in runs),
        "outcomes": _count(run.outcome for run in runs),
        "killed_in": _count(str(run.killed_in) for run in runs),
        "healthy_after_boot_seconds": {
            "median": statistics.median(recover) if recover else None,
            "max": max(recover, default=None),
        },
        "not_covered": NOT_COVERED,
        "per_run": [{**asdict(run), "boot_started": None} for run in runs],
    }


def _revision() -> str:
    """The commit measured, and the files that differed from it (a shared working tree)."""

    def git(*arguments: str) -> str:
        command = ["git", *arguments]
        return subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT).stdout

    dirty = " ".join(
        line[3:] for line in git("status", "--porcelain", "-uno", "specivod").split("\n") if line
    )
    head = git("rev-parse", "--short", "HEAD").strip()
    return head + (f" with uncommitted changes in {dirty}" if dirty else "")


def _count(values: Any) -> dict[str, int]:
    counted: dict[str, int] = {}
    for value in values:
        counted[value] = counted.get(value, 0) + 1
    return counted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(2**32))
    parser.add_argument("--boot", choices=sorted(BOOTS), default="policy")
    parser.add_argument("--at-states", action="store_true", help="kill in each step in turn")
    parser.add_argument(
        "--states", type=lambda text: set(text.split(",")), help="only these steps (a,b,...)"
    )
    arguments = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="specivod-host-crash-"))
    registry = start_registry(root / "registry")
    engine = OwnDockerd(root / "engine")
    engine.start()
    os.environ["DOCKER_HOST"] = engine.host
    runs: list[Run] = []
    calibration: list[Run] = []
    spans: dict[str, float] = {}
    try:
        releases = [BY_VERSION[version] for version in (BASELINE, *TARGETS)]
        with contextlib.closing(engine.client()) as client:
            images = build_and_push(client, registry.address, releases)
        for number, target in enumerate(TARGETS, start=-len(TARGETS)):
            calibration.append(Run(number, target, None))
            spans[target] = round(one_run(calibration[-1], engine, images, root), 2)
            print(f"uninterrupted upgrade to {target}: {spans[target]} s", flush=True)
            if calibration[-1].problems:
                raise RuntimeError(f"uninterrupted upgrade: {calibration[-1].problems}")
        rng = random.Random(arguments.seed)
        planned = (
            plan_states(arguments.runs, rng, arguments.boot, arguments.states)
            if arguments.at_states or arguments.states
            else plan(arguments.runs, spans, rng, arguments.boot)
        )
        for run in planned:
            runs.append(run)
            try:
                one_run(run, engine, images, root)
            except Exception as error:  # a failed run is a finding: keep it, go on
                run.problems.append(f"{type(error).__name__}: {error}")
                run.evidence = str(root / f"run-{run.number:02d}")
                if not engine.answers():
                    engine.stop()
                    engine.start()
            print(
                f"run {run.number}: {run.target} killed {run.delay_seconds} s after "
                f"{run.at_state or 'its start'}, in "
                f"{run.killed_in} -> {run.outcome}, healthy {run.healthy_after_boot_seconds} s "
                f"after boot{'; PROBLEMS: ' + '; '.join(run.problems) if run.problems else ''}",
                flush=True,
            )
    finally:
        engine.stop()
        registry.stop()
        result = summary(runs, calibration, spans, arguments)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M")
        (RESULTS / f"host_crash-{arguments.boot}-{stamp}.json").write_text(
            json.dumps(result, indent=2) + "\n"
        )
        print(json.dumps({k: v for k, v in result.items() if k != "per_run"}, indent=2))
        print(f"work directory (evidence of failed runs): {root}")
    return 0 if all(not run.problems for run in [*calibration, *runs]) else 1


if __name__ == "__main__":
    sys.exit(main())
