"""Attack review V (engine-outage recovery, today's W1 fix): an outage the adapter noticed but
no step consumed stays armed; a later, unrelated step failure then "recovers" from it and starts
what the rollback stopped on purpose. ``xfail(strict=True)`` proves a defect on the current code;
the marker goes with the fix.

Driven through the real ``ComposeDeployment`` on the fake compose command and fake inspect of
``test_attack_w_outage`` (the engine is "down" while a flag file exists).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from specivod.adapters import compose as compose_module
from specivod.domain.errors import DeploymentError
from specivod.domain.states import State
from tests.unit.engine_kit import make_kit
from tests.unit.fakes import FakeDeployment, FakeRelease, World
from tests.unit.test_attack_w_outage import FAKE_ENGINE_COMPOSE, FakeEngine, _deployment


@pytest.mark.xfail(
    strict=True,
    reason=(
        "finding V1: an outage seen by a compose call whose failure the engine swallows "
        "(ROLLING_BACK's ensure_images via _report_problem) leaves _unreachable_since armed; "
        "STOPPING then stops the app after it, and the next unrelated step failure's "
        "recover_from_outage starts the stopped (failed) release again"
    ),
)
async def test_an_outage_already_over_does_not_start_what_the_rollback_stopped_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine(tmp_path)
    monkeypatch.setattr(compose_module, "engine_problem", engine.problem)
    deployment = _deployment(tmp_path, engine)
    await deployment.services()  # the engine was seen working

    # ROLLING_BACK of a failed upgrade: ensure_images(previous) runs `compose pull --policy
    # missing` while dockerd restarts; _check_before_stopping reports the failure and goes on.
    engine.down.touch()
    pulled = await deployment.compose("pull", "--quiet", "--policy", "missing", "api", "worker")
    assert not pulled.ok
    engine.down.unlink()  # dockerd is back a moment later; nothing asks the adapter

    await asyncio.sleep(0.01)
    # STOPPING: the rollback stops the failed release; the engine answers, the stop succeeds.
    await deployment.stop(["api", "worker"])
    assert not engine.containers()["api"]["running"]

    # SAFETY_BACKUP (disk full), RESTORING (pg_restore error) or RESTARTING (previous image
    # missing — the pull above failed) then fails for a reason of its own; drive() asks
    # came_back() first, which calls:
    await deployment.recover_from_outage()

    assert engine.started() == [], "started the release the rollback had stopped"
    assert not engine.containers()["api"]["running"]
    assert not engine.containers()["worker"]["running"]


CONFIG_WITHOUT_ENGINE = FAKE_ENGINE_COMPOSE.replace(
    'if os.path.exists(os.environ["FAKE_ENGINE_DOWN"]):',
    'if args[0] != "config" and os.path.exists(os.environ["FAKE_ENGINE_DOWN"]):',
)
"""Like real compose v2 (checked with 2.26 against a socket nobody listens on): ``config``
renders the project without the Docker Engine and exits 0."""


@pytest.mark.xfail(
    strict=True,
    reason=(
        "finding V5: a `compose config` that succeeds while the engine is already gone counts "
        "as the engine 'last seen working', so the containers its death stopped (before that) "
        "are not started again when it is back"
    ),
)
async def test_a_config_run_after_the_engine_died_is_not_a_sign_of_life(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine(tmp_path)
    engine.script.write_text(CONFIG_WITHOUT_ENGINE)
    monkeypatch.setattr(compose_module, "engine_problem", engine.problem)
    deployment = _deployment(tmp_path, engine)
    assert (await deployment.service_state("db")).running  # the engine seen working

    # dockerd dies (a package upgrade restarts it): every container stops with it.
    engine.down.touch()
    died = datetime.now(UTC)
    containers = engine.containers()
    for container in containers.values():
        container["running"] = False
    engine.state.write_text(json.dumps(containers))
    engine.stopped_at(["db", "api", "worker"], died)
    await asyncio.sleep(0.01)

    # The next step renders the project first (app_services, or versioned_services after
    # .env changed), then touches the engine and fails.
    await deployment.app_services()
    with pytest.raises(DeploymentError):
        await deployment.stop(["api", "worker"])

    engine.down.unlink()  # dockerd is back; these containers have no restart policy
    await deployment.recover_from_outage()

    assert "db" in engine.started(), "the database its death stopped stays stopped"


class RememberedOutage(FakeDeployment):
    """The compose adapter's outage rule on the fake world (proven on the adapter above): an
    outage is noticed by a failed call and remembered until ``recover_from_outage``, which
    starts the app when it was stopped after the outage was noticed. The engine goes away
    while the rollback checks the previous version's images, and the previous images cannot
    be brought up (their pull failed then; the registry is still away)."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.outage_noticed = False
        self.stopped_since_outage = False

    async def ensure_images(self, version: str) -> None:
        self.world.calls.append(f"ensure images {version} (engine gone)")
        self.outage_noticed = True
        raise DeploymentError(f"cannot pull {version}: Cannot connect to the Docker daemon")

    async def stop(self, services: Sequence[str]) -> None:
        await super().stop(services)
        self.stopped_since_outage = self.outage_noticed

    async def up(self, version: str) -> None:
        if version == PREVIOUS:
            self.world.calls.append(f"up {version} (no such image)")
            raise DeploymentError(f"pull access denied for specivo:{version}")
        await super().up(version)

    async def recover_from_outage(self) -> str | None:
        if not self.outage_noticed:
            return None
        self.outage_noticed = False
        if self.stopped_since_outage and self.world.stopped:
            await self.start(self.app)
        return "the Docker Engine is back; started again what its restart stopped: api"


PREVIOUS = "0.1.10"


@pytest.mark.xfail(
    strict=True,
    reason=(
        "finding V1 end to end: after a restore, RESTARTING's failure 'recovers' from the "
        "outage seen at ROLLING_BACK and starts the failed release on the restored database; "
        "the transaction ends ROLLBACK_FAILED with that release serving"
    ),
)
async def test_a_failed_rollback_does_not_leave_the_failed_release_serving(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3)})
    kit = make_kit(tmp_path, deployment=RememberedOutage(world))

    result = await kit.engine.upgrade(to="0.2.3")

    assert result.transaction.state is State.ROLLBACK_FAILED
    assert world.schema == 1, "the database was restored to the pre-upgrade backup"
    assert world.stopped or world.running != "0.2.3", (
        f"0.2.3 runs on the restored database: {world.calls}"
    )
