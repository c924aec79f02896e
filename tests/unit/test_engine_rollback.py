"""Manual rollbacks (`specivod rollback`) on fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from specivod.domain.states import RestoreMode, State
from specivod.engine.journal import Kind
from specivod.engine.service import NothingToDo
from tests.unit.engine_kit import make_kit
from tests.unit.fakes import FakeRelease, World


async def test_nothing_to_roll_back_without_a_successful_upgrade(tmp_path: Path) -> None:
    kit = make_kit(tmp_path)

    with pytest.raises(NothingToDo, match="no successful upgrade"):
        await kit.engine.rollback()


async def test_rollback_after_a_schema_change_restores_and_keeps_a_safety_backup(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.0": FakeRelease(schema=2)})
    kit = make_kit(tmp_path, world)
    upgrade = (await kit.engine.upgrade(to="0.2.0")).transaction
    world.rows = "rows written after the upgrade"

    rollback = (await kit.engine.rollback()).transaction

    assert rollback.kind is Kind.ROLLBACK
    assert rollback.state is State.ROLLED_BACK
    assert (rollback.from_version, rollback.to_version) == ("0.2.0", "0.1.10")
    assert rollback.restored and rollback.backup_id == upgrade.backup_id
    assert world.pinned == world.running == "0.1.10"
    assert world.schema == 1
    safety = [b for b in kit.backups.backups.values() if b.rows == "rows written after the upgrade"]
    assert len(safety) == 1, "the replaced state must survive in a backup"
    assert kit.backups.protected[-1] == [upgrade.backup_id], "retention must spare the restore"
    assert kit.steps(rollback) == ["PLANNED", "ROLLING_BACK", "RESTORING", "ROLLED_BACK"]


async def test_rollback_without_schema_change_swaps_the_image_only(tmp_path: Path) -> None:
    world = World()
    kit = make_kit(tmp_path, world)
    await kit.engine.upgrade(to="0.1.11")

    rollback = (await kit.engine.rollback()).transaction

    assert rollback.state is State.ROLLED_BACK
    assert not rollback.restored
    assert not any(call.startswith("restore") for call in world.calls)
    assert world.running == "0.1.10"


@pytest.mark.parametrize(
    ("mode", "restored"), [(RestoreMode.ALWAYS, True), (RestoreMode.NEVER, False)]
)
async def test_restore_mode_overrides_the_fingerprint(
    tmp_path: Path, mode: RestoreMode, restored: bool
) -> None:
    world = World(releases={"0.2.0": FakeRelease(schema=2)})
    kit = make_kit(tmp_path, world)
    await kit.engine.upgrade(to="0.2.0" if mode is RestoreMode.NEVER else "0.1.11")

    rollback = (await kit.engine.rollback(restore=mode)).transaction

    assert rollback.state is State.ROLLED_BACK
    assert rollback.restored is restored
    assert rollback.restore_mode is mode


async def test_second_rollback_finds_nothing_to_undo(tmp_path: Path) -> None:
    kit = make_kit(tmp_path)
    await kit.engine.upgrade(to="0.1.11")
    await kit.engine.rollback()

    with pytest.raises(NothingToDo, match=r"pins 0\.1\.10"):
        await kit.engine.rollback()
