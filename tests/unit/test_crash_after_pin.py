"""A kill after ``.env`` pins the target but before STARTING is journaled, then a boot that runs
``docker compose up -d`` (an operator's boot unit): the target is running, and may have migrated
the database. Recovery must not "abort, the running app was not touched" with ``.env`` put back
under a running target: it rolls back, restoring the data when the schema changed (found by
reading the code behind bench/host_crash.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from specivod.domain.states import State
from specivod.engine.journal import Journal
from tests.unit.engine_kit import Crash, make_kit
from tests.unit.fakes import FakeDeployment, FakeRelease, World


class KilledAfterPin(FakeDeployment):
    def pin(self, version: str) -> None:
        super().pin(version)
        if version == "0.2.3":
            raise Crash("killed right after the .env rename")


async def killed_after_pin(tmp_path: Path, world: World) -> None:
    """An upgrade to 0.2.3 killed right after ``.env`` pinned it, before STARTING."""
    first = make_kit(tmp_path, deployment=KilledAfterPin(world))
    with pytest.raises(Crash):
        await first.engine.upgrade(to="0.2.3")
    first.journal.close()
    assert world.pinned == "0.2.3" and world.running == "0.1.10"


async def test_a_target_the_boot_started_is_rolled_back_with_its_migration(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=True, schema=3)})
    await killed_after_pin(tmp_path, world)
    booted = FakeDeployment(world)
    await booted.up("0.2.3")  # the boot: `docker compose up -d` with .env pinning 0.2.3
    assert world.schema == 3

    second = make_kit(tmp_path, deployment=booted, journal=Journal(tmp_path))
    recovered = await second.engine.recover()

    assert recovered is not None and recovered.state is State.ROLLED_BACK
    assert (world.running, world.pinned, world.schema) == ("0.1.10", "0.1.10", 1)
    assert world.rows == "original rows"
    assert recovered.restored


async def test_a_target_never_started_is_aborted_as_before(tmp_path: Path) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=True, schema=3)})
    await killed_after_pin(tmp_path, world)

    second = make_kit(tmp_path, deployment=FakeDeployment(world), journal=Journal(tmp_path))
    recovered = await second.engine.recover()

    assert recovered is not None and recovered.state is State.ABORTED
    assert (world.running, world.pinned, world.schema) == ("0.1.10", "0.1.10", 1)
