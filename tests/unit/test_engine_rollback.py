"""Manual rollbacks (`specivod rollback`) on fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from specivod.domain.states import ROLLBACK_PATH, RestoreMode, State
from specivod.engine.journal import Journal, Kind
from specivod.engine.service import NothingToDo, RecoveredFirst
from tests.unit.engine_kit import Crash, crash_after, make_kit
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
    assert rollback.safety_backup_id == safety[0].id
    assert upgrade.backup_id in kit.backups.protected[-1], "retention must spare the restore"
    assert kit.steps(rollback) == ["PLANNED", *(state.name for state in ROLLBACK_PATH)]
    safety_at = world.calls.index(
        f"backup (state replaced by transaction #{rollback.id} (rollback))"
    )
    assert safety_at > world.calls.index("stop api"), "saved once no row can be written any more"
    assert world.calls.index("ensure images 0.1.10") < world.calls.index("stop api")


async def test_rollback_without_schema_change_swaps_the_image_only(tmp_path: Path) -> None:
    world = World()
    kit = make_kit(tmp_path, world)
    await kit.engine.upgrade(to="0.1.11")

    rollback = (await kit.engine.rollback()).transaction

    assert rollback.state is State.ROLLED_BACK
    assert not rollback.restored
    assert not any(call.startswith("restore") for call in world.calls)
    assert rollback.safety_backup_id is None, "no restore, nothing replaced, nothing to save"
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


async def test_rollback_after_a_recovery_undoes_one_upgrade_not_two(tmp_path: Path) -> None:
    """Upgrade A succeeded; upgrade B was killed while verifying. ``rollback`` recovers B (rolled
    back) and stops there: going on would roll A back too, last week's database with it."""
    world = World(releases={"0.2.0": FakeRelease(schema=2), "0.2.1": FakeRelease(healthy=False)})
    first = make_kit(tmp_path, world)
    await first.engine.upgrade(to="0.1.11")
    crash_after(first.journal, State.VERIFYING)
    with pytest.raises(Crash):
        await first.engine.upgrade(to="0.2.0", force=True)
    first.journal.close()
    world.releases["0.2.0"] = FakeRelease(healthy=False)
    restarted = make_kit(tmp_path, world, journal=Journal(tmp_path))

    with pytest.raises(RecoveredFirst) as stopped:
        await restarted.engine.rollback()

    assert stopped.value.recovered.state is State.ROLLED_BACK
    assert world.pinned == world.running == "0.1.11"
    assert [t.kind for t in restarted.journal.history()] == [Kind.UPGRADE, Kind.UPGRADE]


async def test_restore_pins_the_backups_version_and_saves_what_it_replaces(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.0": FakeRelease(schema=2)})
    kit = make_kit(tmp_path, world)
    upgrade = (await kit.engine.upgrade(to="0.2.0")).transaction
    assert upgrade.backup_id is not None
    world.rows = "rows written on 0.2.0"

    restore = (await kit.engine.restore(upgrade.backup_id, "0.1.10")).transaction

    assert (restore.kind, restore.state) == (Kind.RESTORE, State.ROLLED_BACK)
    assert (restore.from_version, restore.to_version) == ("0.2.0", "0.1.10")
    assert world.pinned == world.running == "0.1.10"
    assert (world.schema, world.rows) == (1, "original rows")
    assert restore.safety_backup_id is not None
    assert world.backups[restore.safety_backup_id].rows == "rows written on 0.2.0"
    assert restore.restored and restore.data_aside == f"/srv/data.replaced-tx{restore.id}"


async def test_a_killed_restore_is_finished_by_recover(tmp_path: Path) -> None:
    world = World(releases={"0.2.0": FakeRelease(schema=2)})
    first = make_kit(tmp_path, world)
    upgrade = (await first.engine.upgrade(to="0.2.0")).transaction
    assert upgrade.backup_id is not None
    crash_after(first.journal, State.RESTORING)
    with pytest.raises(Crash):
        await first.engine.restore(upgrade.backup_id, "0.1.10")
    first.journal.close()
    assert world.stopped, "killed with the app stopped"
    restarted = make_kit(tmp_path, world, journal=Journal(tmp_path))

    final = await restarted.engine.recover()

    assert final is not None and (final.kind, final.state) == (Kind.RESTORE, State.ROLLED_BACK)
    assert world.pinned == world.running == "0.1.10" and world.schema == 1
    assert not world.stopped
    assert sum("(restore)" in call for call in world.calls) == 1, "one safety backup"


async def test_a_restore_of_a_missing_backup_aborts_with_the_app_serving(tmp_path: Path) -> None:
    world = World()
    kit = make_kit(tmp_path, world)

    restore = (await kit.engine.restore("b9", "0.1.9")).transaction

    assert restore.state is State.ABORTED
    assert not any(call.startswith(("stop", "pin", "backup")) for call in world.calls)
