"""Attack review W (engine outages): sequences that start again what a transaction stopped on
purpose. ``xfail(strict=True)`` proves a defect on the current code; the marker goes with the fix.

The compose adapter is driven through a hand-written fake compose command (a script keeping each
container's state in a JSON file) and a hand-written ``_inspect``: the Docker Engine "goes away"
while a flag file exists (every command fails the way compose says it), and comes back when the
flag is removed.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from specivod.adapters import compose as compose_module
from specivod.adapters.compose import ComposeDeployment
from specivod.domain.errors import DeploymentError
from specivod.engine.engine_outage import stopped_since
from specivod.engine.ports import ServiceState
from specivod.settings import DeploymentSettings

ENGINE_GONE = (
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
    "Is the docker daemon running?"
)

FAKE_ENGINE_COMPOSE = """\
import json, os, sys
from datetime import datetime, timezone
args = sys.argv[1:]
args = args[args.index("--env-file") + 2 :]
state_path = os.environ["FAKE_ENGINE_STATE"]
with open(os.environ["FAKE_ENGINE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if os.path.exists(os.environ["FAKE_ENGINE_DOWN"]):
    sys.stderr.write(os.environ["FAKE_ENGINE_GONE"] + "\\n")
    sys.exit(1)
with open(state_path) as f:
    state = json.load(f)
now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
command = args[0]
if command == "config":
    print("\\n".join(state))
elif command == "ps":
    print("\\n".join("cid-" + s for s in args[1:] if s in state))
elif command == "stop":
    for service in args[1:]:
        state[service].update(running=False, finished=now)
elif command == "start":
    for service in args[1:]:
        state[service].update(running=True, started=now)
with open(state_path, "w") as f:
    json.dump(state, f)
"""


class FakeEngine:
    """The containers of one project, as the fake compose command and ``_inspect`` see them."""

    def __init__(self, tmp_path: Path) -> None:
        self.script = tmp_path / "fake-compose.py"
        self.script.write_text(FAKE_ENGINE_COMPOSE)
        self.state = tmp_path / "containers.json"
        self.log = tmp_path / "compose.log"
        self.down = tmp_path / "engine-down"
        earlier = "2026-11-26T03:00:00.000000000Z"
        self.state.write_text(
            json.dumps(
                {
                    service: {"running": True, "started": earlier, "finished": ""}
                    for service in ("db", "api", "worker")
                }
            )
        )
        (tmp_path / ".env").write_text("SPECIVO_VERSION=0.2.0\n")
        self.environ = {
            "FAKE_ENGINE_STATE": str(self.state),
            "FAKE_ENGINE_LOG": str(self.log),
            "FAKE_ENGINE_DOWN": str(self.down),
            "FAKE_ENGINE_GONE": ENGINE_GONE,
            "PATH": os.environ["PATH"],
        }

    def containers(self) -> dict[str, dict[str, object]]:
        loaded: dict[str, dict[str, object]] = json.loads(self.state.read_text())
        return loaded

    def started(self) -> list[str]:
        """Every service a ``compose start`` was asked for."""
        commands = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [service for command in commands if command[0] == "start" for service in command[1:]]

    def stopped_at(self, services: list[str], moment: datetime) -> None:
        containers = self.containers()
        for service in services:
            containers[service]["finished"] = moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
        self.state.write_text(json.dumps(containers))

    def problem(self, _environ: object = None, _timeout: int = 5) -> str | None:
        return ENGINE_GONE if self.down.exists() else None


class FakeEngineDeployment(ComposeDeployment):
    """The real adapter; only the Docker API's inspect is answered from the fake engine."""

    def __init__(self, engine: FakeEngine, settings: DeploymentSettings) -> None:
        super().__init__(settings, environ=engine.environ, database_service="db")
        self.engine = engine

    def _inspect(self, service: str, container_id: str) -> ServiceState:
        container = self.engine.containers()[service]
        return ServiceState(
            service=service,
            container_id=container_id,
            status="running" if container["running"] else "exited",
            health=None,
            image=f"127.0.0.1:5000/specivo/specivo:{service}",
            started_at=str(container["started"]),
            finished_at=str(container["finished"]),
        )


def _deployment(tmp_path: Path, engine: FakeEngine) -> FakeEngineDeployment:
    settings = DeploymentSettings.model_validate(
        {"project_dir": tmp_path, "compose_command": [sys.executable, str(engine.script)]}
    )
    return FakeEngineDeployment(engine, settings)


async def test_an_outage_after_stopping_the_app_does_not_start_the_app_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine(tmp_path)
    monkeypatch.setattr(compose_module, "engine_problem", engine.problem)
    deployment = _deployment(tmp_path, engine)

    await deployment.stop(["api", "worker"])  # STOPPING: the rollback stops the failed release
    # The containers stopped a moment before compose returned, within the same second (pinned
    # here so the test does not depend on where a second boundary falls under load).
    last_seen = deployment._last_contact
    assert last_seen is not None and last_seen.microsecond > 0
    engine.stopped_at(["api", "worker"], last_seen.replace(microsecond=0))
    engine.down.touch()  # dockerd dies while the schema is fingerprinted (compose exec db ...)
    failed = await deployment.compose("exec", "-T", "db", "pg_dump", "--schema-only")
    assert not failed.ok
    engine.down.unlink()  # dockerd is back; the step that failed is to run again

    what = await deployment.recover_from_outage()

    assert what is not None  # the outage was seen
    assert engine.started() == [], f"started again: {engine.started()} ({what})"
    assert not engine.containers()["api"]["running"]


def test_a_container_stopped_before_the_engine_was_last_seen_working_is_not_counted() -> None:
    stopped_by_the_transaction = ServiceState(
        "api",
        "cid-api",
        "exited",
        None,
        "127.0.0.1:5000/specivo/specivo:0.2.0",
        "2026-11-26T03:00:00.000000000Z",
        finished_at="2026-11-26T16:00:00.100000000Z",
    )
    last_seen_working = datetime(2026, 11, 26, 16, 0, 0, 900_000, tzinfo=UTC)

    assert stopped_since([stopped_by_the_transaction], last_seen_working) == []


async def test_the_fake_engine_reports_an_outage_and_a_failed_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness itself: while the flag exists commands fail and the adapter notices."""
    engine = FakeEngine(tmp_path)
    monkeypatch.setattr(compose_module, "engine_problem", engine.problem)
    deployment = _deployment(tmp_path, engine)
    engine.down.touch()
    with pytest.raises(DeploymentError, match="Cannot connect"):
        await deployment.stop(["api"])
    engine.down.unlink()
    assert await deployment.recover_from_outage() is not None
    assert await deployment.recover_from_outage() is None
