"""Attack review V (engine-outage recovery, today's W1 fix): an outage the adapter noticed but
no step consumed stays armed; a later, unrelated step failure then "recovers" from it and starts
what the rollback stopped on purpose. Fixed: the outage ends at the first engine contact that
works after it, and only what stopped between the two is started again; ``compose config`` (which
works without the engine) is no sign of life.

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
    outage is noticed by a failed call and remembered until ``recover_from_outage``; the first
    call that works after it closes the outage, and only what stopped inside it is started
    again. The engine goes away while the rollback checks the previous version's images, and
    the previous images cannot be brought up (their pull failed then; the registry is still
    away)."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.outage_noticed = False
        self.outage_over = False
        self.stopped_inside_outage = False

    async def ensure_images(self, version: str) -> None:
        self.world.calls.append(f"ensure images {version} (engine gone)")
        self.outage_noticed = True
        raise DeploymentError(f"cannot pull {version}: Cannot connect to the Docker daemon")

    async def stop(self, services: Sequence[str]) -> None:
        self.outage_over = self.outage_noticed  # this call works: the outage ended as it began
        await super().stop(services)
        self.stopped_inside_outage = self.outage_noticed and not self.outage_over

    async def up(self, version: str) -> None:
        if version == PREVIOUS:
            self.world.calls.append(f"up {version} (no such image)")
            raise DeploymentError(f"pull access denied for specivo:{version}")
        await super().up(version)

    async def recover_from_outage(self) -> str | None:
        if not self.outage_noticed:
            return None
        self.outage_noticed = self.outage_over = False
        if self.stopped_inside_outage and self.world.stopped:
            await self.start(self.app)
        return "the Docker Engine is back"


PREVIOUS = "0.1.10"


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
