"""Failures inside a transaction never escape it: every one ends in a terminal state, a restore
is checked before the app is stopped, and work the journal records as done is not done twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from specivod.domain.errors import DeploymentError
from specivod.domain.states import State
from specivod.engine.journal import Journal, Transaction
from specivod.engine.ports import ServiceState
from tests.unit.engine_kit import Crash, crash_after, make_kit
from tests.unit.fakes import FakeBackups, FakeDeployment, FakeRelease, World


class EnvNotWritable(FakeDeployment):
    """`.env` cannot be written back to ``version`` (disk full, read-only mount)."""

    def __init__(self, world: World, version: str) -> None:
        super().__init__(world)
        self.version = version

    def pin(self, version: str) -> None:
        if version == self.version:
            raise DeploymentError(f"cannot pin {version} in .env: No space left on device")
        super().pin(version)


class BrokenInspection(FakeDeployment):
    """Reading a container's state fails with an error no adapter translated, while ``version``
    runs (``None``: always)."""

    def __init__(self, world: World, version: str | None) -> None:
        super().__init__(world)
        self.version = version

    async def service_state(self, service: str) -> ServiceState:
        if self.version is None or self.world.running == self.version:
            raise RuntimeError("the Docker SDK fell over")
        return await super().service_state(service)


def _crash_after_recording(journal: Journal, field: str) -> None:
    record = journal.record

    def record_then_die(transaction: Transaction, **updates: Any) -> Transaction:
        recorded = record(transaction, **updates)
        if field in updates:
            raise Crash(field)
        return recorded

    journal.record = record_then_die  # type: ignore[method-assign]


async def test_unwritable_env_during_the_rollback_ends_in_rollback_failed(tmp_path: Path) -> None:
    world = World(releases={"0.2.1": FakeRelease(healthy=False)})
    kit = make_kit(tmp_path, deployment=EnvNotWritable(world, "0.1.10"))

    result = await kit.engine.upgrade(to="0.2.1")

    assert result.transaction.state is State.ROLLBACK_FAILED
    assert "No space left on device" in (result.transaction.reason or "")
    assert kit.journal.unfinished() is None


async def test_unwritable_env_when_pinning_the_target_aborts(tmp_path: Path) -> None:
    world = World()
    kit = make_kit(tmp_path, deployment=EnvNotWritable(world, "0.2.0"))

    result = await kit.engine.upgrade(to="0.2.0")

    assert result.transaction.state is State.ABORTED
    assert world.pinned == world.running == "0.1.10"
    assert not any(call.startswith("up") for call in world.calls)


async def test_unexpected_error_while_verifying_rolls_back(tmp_path: Path) -> None:
    world = World()
    kit = make_kit(tmp_path, deployment=BrokenInspection(world, "0.2.0"))

    result = await kit.engine.upgrade(to="0.2.0")

    assert result.transaction.state is State.ROLLED_BACK
    assert "the Docker SDK fell over" in (result.transaction.reason or "")
    assert world.pinned == world.running == "0.1.10"


async def test_unexpected_error_during_the_rollback_ends_in_rollback_failed(
    tmp_path: Path,
) -> None:
    kit = make_kit(tmp_path, deployment=BrokenInspection(World(), None))

    result = await kit.engine.upgrade(to="0.2.0")

    assert result.transaction.state is State.ROLLBACK_FAILED
    assert kit.journal.unfinished() is None


async def test_a_manual_rollback_with_a_missing_backup_aborts_with_the_app_serving(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.0": FakeRelease(schema=2)})
    kit = make_kit(tmp_path, world)
    upgrade = (await kit.engine.upgrade(to="0.2.0")).transaction
    assert upgrade.backup_id is not None
    del world.backups[upgrade.backup_id]

    rollback = (await kit.engine.rollback()).transaction

    assert rollback.state is State.ABORTED
    assert "no backup" in (rollback.reason or "")
    assert not any(call.startswith("stop") for call in world.calls)
    assert (world.pinned, world.running, world.stopped, world.schema) == (
        "0.2.0",
        "0.2.0",
        False,
        2,
    )


async def test_a_manual_rollback_whose_safety_backup_fails_aborts_with_the_app_serving(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.0": FakeRelease(schema=2)})
    backups = FakeBackups(world)
    kit = make_kit(tmp_path, world, backups=backups)
    await kit.engine.upgrade(to="0.2.0")
    backups.create_fails = True

    rollback = (await kit.engine.rollback()).transaction

    assert rollback.state is State.ABORTED
    assert "pg_dump" in (rollback.reason or "")
    assert not any(call.startswith(("restore", "pin", "up")) for call in world.calls[-4:])
    assert world.calls[-2:] == ["backup (state replaced by transaction #2 (rollback))", "start api"]
    assert (world.pinned, world.running, world.stopped, world.schema) == (
        "0.2.0",
        "0.2.0",
        False,
        2,
    )


async def test_a_restore_journaled_as_done_is_not_done_again(tmp_path: Path) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3, data_change="new")})
    first = make_kit(tmp_path, world)
    crash_after(first.journal, State.RESTARTING)
    with pytest.raises(Crash):
        await first.engine.upgrade(to="0.2.3")
    first.journal.close()
    world.data = "written by 0.1.10 after the restore"
    restarted = make_kit(tmp_path, world, journal=Journal(tmp_path))

    final = await restarted.engine.recover()

    assert final is not None and final.state is State.ROLLED_BACK
    assert sum(call.startswith("restore") for call in world.calls) == 1
    assert sum(call.startswith("stop") for call in world.calls) == 1
    assert world.data == "written by 0.1.10 after the restore"
    assert world.pinned == world.running == "0.1.10"


async def test_a_resumed_manual_rollback_takes_one_safety_backup(tmp_path: Path) -> None:
    world = World(releases={"0.2.0": FakeRelease(schema=2)})
    first = make_kit(tmp_path, world)
    await first.engine.upgrade(to="0.2.0")
    crash_after(first.journal, State.RESTORING)
    with pytest.raises(Crash):
        await first.engine.rollback()
    first.journal.close()
    restarted = make_kit(tmp_path, world, journal=Journal(tmp_path))

    final = await restarted.engine.recover()

    assert final is not None and final.state is State.ROLLED_BACK
    assert final.safety_backup_id is not None
    safety = [call for call in world.calls if "(rollback)" in call]
    assert len(safety) == 1
    assert world.schema == 1 and world.running == "0.1.10"


async def test_upgrade_backups_spare_the_one_a_rollback_needs(tmp_path: Path) -> None:
    kit = make_kit(tmp_path)
    first = (await kit.engine.upgrade(to="0.1.11")).transaction

    await kit.engine.upgrade(to="0.2.0")

    assert kit.backups.protected == [[], [first.backup_id]]


async def test_a_report_that_cannot_be_written_does_not_stop_the_upgrade(
    tmp_path: Path,
) -> None:
    kit = make_kit(tmp_path)

    def closed_terminal(_transaction: Transaction, _message: str) -> None:
        raise BrokenPipeError("stdout is closed")

    kit.engine.context.report = closed_terminal

    result = await kit.engine.upgrade(to="0.2.0")

    assert result.transaction.state is State.SUCCEEDED
