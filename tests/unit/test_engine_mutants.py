"""Tests that kill mutants of the rollback and outage code (``rollback_steps``, ``engine_outage``,
``transaction.resume`` and the failure paths) that the other unit tests let live: each pins one
safety rule — nothing restored while an app service runs, a rollback never starts a release that
was not serving, an outage restarts what it stopped and nothing else, earlier safety backups are
kept, PINNED with a started target rolls back, sessions end before the schema is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from specivod.domain.errors import DeploymentError
from specivod.domain.states import State
from specivod.engine.journal import Journal
from specivod.engine.ports import ServiceState
from tests.unit.engine_kit import Crash, crash_after, make_kit
from tests.unit.fakes import FakeBackups, FakeDeployment, FakeRelease, World


async def test_a_rollback_journaled_without_serving_starts_the_app_services_again(
    tmp_path: Path,
) -> None:
    """A journal from a specivod that did not record ``serving``: a manual rollback that cannot
    take its safety backup starts the app services again (the deployment's list), and only
    aborts."""
    world = World(releases={"0.2.0": FakeRelease(schema=2)})
    backups = FakeBackups(world)
    first = make_kit(tmp_path, world, backups=backups)
    await first.engine.upgrade(to="0.2.0")
    crash_after(first.journal, State.SAFETY_BACKUP)
    with pytest.raises(Crash):
        await first.engine.rollback()
    killed = first.journal.unfinished()
    assert killed is not None and killed.state is State.SAFETY_BACKUP
    first.journal.record(killed, serving=None)
    first.journal.close()
    assert world.stopped

    backups.create_fails = True
    second = make_kit(tmp_path, world, backups=backups, journal=Journal(tmp_path))
    recovered = await second.engine.recover()

    assert recovered is not None and recovered.state is State.ABORTED
    assert world.calls[-1] == "start api"
    assert (world.pinned, world.running, world.stopped, world.schema) == (
        "0.2.0",
        "0.2.0",
        False,
        2,
    )


async def test_a_rollback_that_cannot_keep_the_state_starts_each_serving_service_again(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.0": FakeRelease(schema=2)})
    backups = FakeBackups(world)
    deployment = FakeDeployment(world, app_services=("api", "worker"))
    kit = make_kit(tmp_path, deployment=deployment, backups=backups)
    await kit.engine.upgrade(to="0.2.0")
    backups.create_fails = True

    rollback = (await kit.engine.rollback()).transaction

    assert rollback.state is State.ABORTED and rollback.serving == "api,worker"
    assert "pg_dump" in (rollback.reason or "")
    assert world.calls[-1] == "start api worker"
    assert "api, worker started again" in kit.reports[-1]


class KilledAfterPin(FakeDeployment):
    def pin(self, version: str) -> None:
        super().pin(version)
        if version == "0.2.3":
            raise Crash("killed right after the .env rename")


class OnlyApiAnswers(FakeDeployment):
    """The engine knows only the services by their name: any other is absent."""

    async def service_state(self, service: str) -> ServiceState:
        if service != "api":
            return ServiceState(service, None, "absent", None, "", "")
        return await super().service_state(service)


class ImagesUnknown(FakeDeployment):
    async def versioned_images(self, version: str) -> dict[str, str]:
        raise DeploymentError("docker compose config: the engine does not answer")


async def _killed_after_pin(tmp_path: Path, world: World) -> None:
    first = make_kit(tmp_path, deployment=KilledAfterPin(world))
    with pytest.raises(Crash):
        await first.engine.upgrade(to="0.2.3")
    first.journal.close()


async def test_a_target_started_since_pinned_is_looked_up_by_its_service(tmp_path: Path) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=True, schema=3)})
    await _killed_after_pin(tmp_path, world)
    booted = OnlyApiAnswers(world)
    await booted.up("0.2.3")

    second = make_kit(tmp_path, deployment=booted, journal=Journal(tmp_path))
    recovered = await second.engine.recover()

    assert recovered is not None and recovered.state is State.ROLLED_BACK
    assert (world.running, world.pinned, world.schema) == ("0.1.10", "0.1.10", 1)


async def test_a_target_that_cannot_be_looked_up_after_pinned_is_aborted_and_said(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=True, schema=3)})
    await _killed_after_pin(tmp_path, world)

    second = make_kit(tmp_path, deployment=ImagesUnknown(world), journal=Journal(tmp_path))
    recovered = await second.engine.recover()

    assert recovered is not None and recovered.state is State.ABORTED
    assert any("cannot tell whether 0.2.3 was started" in line for line in second.reports)
