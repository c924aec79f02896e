"""Engine trouble (issue 13, item 4) on a Docker Engine of the tests' own (``OwnDockerd``), never
the suite's shared one: the sandbox deployment, ``specivod`` and compose reach it through
``DOCKER_HOST``; its images come from the suite's registry.

- dockerd stopped while ``specivod run`` idles: the daemon stays up, ``/healthz`` answers, the
  status API and ``specivod_engine_up`` say the engine is unreachable, and once dockerd is back
  the daemon sees it and upgrades again;
- dockerd SIGKILLed (and started again a few seconds later) right after the upgrade journals
  PULLING, VERIFYING, or RESTORING (a release that migrates then fails): the transaction ends
  SUCCEEDED, ROLLED_BACK or ABORTED, ``.env`` pins what that outcome means, the app serves it,
  and no row or data file is lost;
- the ``db`` container killed during a restore: the restore is retried or ends ROLLBACK_FAILED
  with the backup and the set-aside data dir intact.

The kill happens inside the specivod process right after the state is journaled (this module
run as ``python -m tests.e2e.test_engine_trouble_real STATE FAULT specivod-args...``): the test's
own fault injection, like ``crash_runner``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.config import specivod_config, write_config
from sandbox.deployment import SandboxDeployment
from sandbox.releases import BASELINE, HEALTHY_UPGRADE, MIGRATES_THEN_FAILS
from specivod.domain.states import State
from tests.conftest import Specivod, Stack
from tests.support.own_dockerd import OwnDockerd, deployment_on
from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.stack

ROOT = Path(__file__).parent.parent.parent
OUTAGE_SECONDS = 3.0
"""How long dockerd stays dead before the test starts it again."""
EVERY_DAY = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ENDINGS = {State.SUCCEEDED.value, State.ROLLED_BACK.value, State.ABORTED.value}


@pytest.fixture(scope="module")
def own_engine(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnDockerd]:
    engine = OwnDockerd(tmp_path_factory.mktemp("own-engine"))
    engine.start()
    try:
        engine.pull(stack.images.database, f"{stack.images.app}:{BASELINE}")
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def engine(own_engine: OwnDockerd, monkeypatch: pytest.MonkeyPatch) -> OwnDockerd:
    """The own engine, running, and ``DOCKER_HOST`` pointing at it for this test."""
    if own_engine.pid is None:
        own_engine.start()
    monkeypatch.setenv("DOCKER_HOST", own_engine.host)
    return own_engine


@pytest.fixture
def deployment(engine: OwnDockerd, stack: Stack, tmp_path: Path) -> Iterator[SandboxDeployment]:
    with deployment_on(engine, stack.images, tmp_path) as created:
        yield created


def specivod_for(
    deployment: SandboxDeployment, tmp_path: Path, **sections: dict[str, object] | list[object]
) -> Specivod:
    config = specivod_config(deployment, tmp_path, **sections)
    return Specivod(write_config(tmp_path / "specivod.toml", config))


def kill_engine_after(
    engine: OwnDockerd, specivod: Specivod, state: State, *arguments: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``specivod ARGUMENTS`` that SIGKILLs dockerd right after journaling ``state``; start
    dockerd again ``OUTAGE_SECONDS`` later. Returns the run and the seconds dockerd was down."""
    assert engine.pid is not None
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
    command = [sys.executable, "-m", "tests.e2e.test_engine_trouble_real", state.name]
    process = subprocess.Popen(
        [*command, f"dockerd:{engine.pid}", "--config", str(specivod.config), *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=ROOT,
    )
    assert engine.process is not None
    try:
        wait_for(f"dockerd killed after {state.name}", lambda: engine.pid is None, 120)
        killed = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        engine.start()
        down = time.monotonic() - killed
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), down


def transactions(specivod: Specivod) -> list[dict[str, Any]]:
    result = specivod("history", "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["transactions"])


def pinned(deployment: SandboxDeployment) -> str:
    for line in deployment.env_file.read_text().splitlines():
        if line.startswith("SPECIVO_VERSION="):
            return line.partition("=")[2]
    raise AssertionError("no SPECIVO_VERSION in .env")


def database_answers(deployment: SandboxDeployment) -> bool:
    try:
        return deployment.psql("SELECT 1") == "1"
    except subprocess.CalledProcessError:
        return False


def issue_rows(deployment: SandboxDeployment) -> str:
    return deployment.psql(
        "SELECT count(*) || ':' || md5(string_agg(title, ',' ORDER BY id)) FROM issues"
    )


@pytest.mark.parametrize(
    ("state", "target"),
    [
        (State.PULLING, HEALTHY_UPGRADE),
        (State.VERIFYING, HEALTHY_UPGRADE),
        (State.RESTORING, MIGRATES_THEN_FAILS),
    ],
    ids=["pull", "verifying", "restore"],
)
def test_dockerd_killed_mid_upgrade_ends_in_a_whole_state(
    state: State,
    target: str,
    engine: OwnDockerd,
    deployment: SandboxDeployment,
    tmp_path: Path,
) -> None:
    specivod = specivod_for(deployment, tmp_path)
    env_before = deployment.env_file.read_bytes()
    rows_before, table_before = issue_rows(deployment), deployment.table_checksum()
    files_before = deployment.data_hashes()

    run, down = kill_engine_after(engine, specivod, state, "upgrade", "--now", "--to", target)
    sys.stderr.write(f"{state.name}: dockerd down {down:.1f}s; exit {run.returncode}\n")
    sys.stderr.write(run.stdout[-3000:] + run.stderr[-3000:])
    history = transactions(specivod)
    if history[0]["state"] not in ENDINGS | {State.ROLLBACK_FAILED.value}:
        recovered = specivod("recover")
        sys.stderr.write(recovered.stdout + recovered.stderr)
        history = transactions(specivod)
    assert len(history) == 1
    outcome = history[0]["state"]
    assert outcome in ENDINGS, f"{outcome}: {run.stdout}{run.stderr}"

    expected = target if outcome == State.SUCCEEDED.value else BASELINE
    assert pinned(deployment) == expected
    if outcome != State.SUCCEEDED.value:
        assert deployment.env_file.read_bytes() == env_before
    wait_for(f"the api serving {expected}", lambda: deployment.running_version() == expected, 60)
    health = deployment.api_container()["State"]["Health"]["Status"]  # type: ignore[index]
    assert health == "healthy"
    assert issue_rows(deployment) == rows_before
    if outcome != State.SUCCEEDED.value:
        assert deployment.table_checksum() == table_before
        assert deployment.data_hashes() == files_before
    listed = json.loads(specivod("backups", "--json").stdout)["backups"]
    assert listed and all(backup["valid"] for backup in listed)


def test_the_db_container_killed_during_a_restore_deletes_nothing(
    engine: OwnDockerd, deployment: SandboxDeployment, tmp_path: Path
) -> None:
    specivod = specivod_for(deployment, tmp_path)
    rows_before, files_before = deployment.table_checksum(), deployment.data_hashes()
    database = deployment.compose("ps", "--quiet", "db").stdout.strip()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
    fault = ["tests.e2e.test_engine_trouble_real", "RESTORING", f"container:{database}"]
    upgrade = ["upgrade", "--now", "--to", MIGRATES_THEN_FAILS]
    run = subprocess.run(
        [sys.executable, "-m", *fault, "--config", str(specivod.config), *upgrade],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    sys.stderr.write(run.stdout[-3000:] + run.stderr[-2000:])
    last = transactions(specivod)[0]
    sys.stderr.write(f"db killed after RESTORING: {last['state']}, exit {run.returncode}\n")
    assert last["state"] in (State.ROLLED_BACK.value, State.ROLLBACK_FAILED.value)
    listed = json.loads(specivod("backups", "--json").stdout)["backups"]
    assert len(listed) == 2 and all(backup["valid"] for backup in listed)
    assert deployment.data_hashes(), "the data dir is there"
    if last["state"] == State.ROLLBACK_FAILED.value:
        assert run.returncode == 4
        assert "ROLLBACK FAILED" in run.stdout
        aside = Path(last["data_aside"])
        migrated = deployment.data_hashes(aside) if aside.exists() else deployment.data_hashes()
        assert migrated and migrated != files_before, "the failed release's data dir is kept"
        # the person's repair: the database back up, then the backup restored by hand
        deployment.compose("start", "db")
        wait_for("the db", lambda: database_answers(deployment), 60)
        restored = specivod("restore", str(last["backup_id"]))
        assert restored.returncode == 0, restored.stdout + restored.stderr
    wait_for(f"the api serving {BASELINE}", lambda: deployment.running_version() == BASELINE, 60)
    assert deployment.table_checksum() == rows_before
    assert deployment.data_hashes() == files_before


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:
        body: bytes = answer.read()
        return body


def status_of(base: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(get(f"{base}/api/v1/status"))
    return document


def engine_up(base: str) -> str | None:
    for line in get(f"{base}/metrics").decode().splitlines():
        if line.startswith("specivod_engine_up "):
            return line.split()[1]
    return None


def test_the_daemon_outlives_a_stopped_dockerd_and_upgrades_once_it_is_back(
    engine: OwnDockerd, deployment: SandboxDeployment, tmp_path: Path
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    base = f"http://{listen}"
    specivod = specivod_for(
        deployment,
        tmp_path,
        registry={"image": deployment.images.app, "timeout": "10s", "poll_interval": "1s"},
        policy={"range": ">=0.1.10 <=0.1.11", "expected_duration": "1s"},
        window=[{"days": list(EVERY_DAY), "start": "00:00", "end": "00:00", "timezone": "UTC"}],
        http={"listen": listen},
    )
    assert specivod("pause").returncode == 0
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
    log = tmp_path / "daemon.log"
    with log.open("wb") as stream:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "specivod", "--config", str(specivod.config), "-v", "run"],
            stdout=stream,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=ROOT,
        )
    try:
        wait_for("the daemon to see the engine", lambda: engine_up(base) == "1.0", 60)
        assert status_of(base)["daemon"]["engine"]["reachable"] is True

        engine.kill(signal.SIGTERM)
        wait_for("specivod_engine_up 0", lambda: engine_up(base) == "0.0", 30)
        assert get(f"{base}/healthz") == b"ok\n"
        reported = status_of(base)["daemon"]
        assert reported["engine"]["reachable"] is False
        assert "Docker Engine does not answer" in reported["engine"]["problem"]
        wait_for(
            "the engine to block unattended upgrades",
            lambda: "Docker Engine" in status_of(base)["daemon"]["blocked_by"],
            10,
        )
        cli_status = specivod("status")
        assert "engine:   unreachable" in cli_status.stdout, cli_status.stdout
        assert specivod("resume").returncode == 0
        time.sleep(3)  # ticks with the window open and a target: no upgrade may start
        assert specivod("history", "--json").stdout.count('"id"') == 0
        assert daemon.poll() is None
        assert specivod("pause").returncode == 0  # until the operator's boot brought it all up

        engine.start()
        wait_for("specivod_engine_up 1", lambda: engine_up(base) == "1.0", 30)
        deployment.compose("up", "--detach", "--wait")  # the db has no restart policy
        assert specivod("resume").returncode == 0
        wait_for(
            "the daemon's upgrade to 0.1.11",
            lambda: status_of(base)["state"] == State.SUCCEEDED.value,
            120,
        )
        assert pinned(deployment) == "0.1.11"
        assert deployment.running_version() == "0.1.11"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        sys.stderr.write(log.read_text()[-4000:])


def arm(state: State, fault: str) -> None:
    """Right after ``state`` is journaled (in this specivod process): ``dockerd:PID`` SIGKILLs
    that dockerd, ``container:ID`` SIGKILLs that container through the engine."""
    from specivod.engine.journal import Journal, Transaction

    advance = Journal.advance
    kind, _, target = fault.partition(":")

    def advance_then_fault(
        self: Journal, transaction: Transaction, new: State, **kwargs: Any
    ) -> Any:
        moved = advance(self, transaction, new, **kwargs)
        if new is state:
            if kind == "dockerd":
                os.kill(int(target), signal.SIGKILL)
            else:
                subprocess.run(["docker", "kill", target], check=True, capture_output=True)
        return moved

    Journal.advance = advance_then_fault  # type: ignore[method-assign, assignment]


if __name__ == "__main__":
    from specivod.cli import main

    arm(State[sys.argv[1]], sys.argv[2])
    sys.exit(main(sys.argv[3:]))
