"""The upgrade transaction on fakes: every outcome, and the journal it leaves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from specivod.domain.errors import BackupError, SpecivodError
from specivod.domain.states import ROLLBACK_PATH, State
from specivod.engine.service import NeedsAPerson, NothingToDo, WindowClosed
from tests.unit.engine_kit import make_kit
from tests.unit.fakes import FakeBackups, FakeDeployment, FakeRelease, World

FORWARD = ["PLANNED", "BACKING_UP", "PULLING", "PINNED", "STARTING", "VERIFYING"]
IMAGE_ROLLBACK = ["ROLLING_BACK", "STOPPING", "RESTARTING", "ROLLED_BACK"]
RESTORING_ROLLBACK = [state.name for state in ROLLBACK_PATH]


async def test_healthy_release_is_installed_and_journaled(tmp_path: Path) -> None:
    kit = make_kit(tmp_path)

    result = await kit.engine.upgrade(to="0.2.0")

    transaction = result.transaction
    assert transaction.state is State.SUCCEEDED
    assert (transaction.from_version, transaction.to_version) == ("0.1.10", "0.2.0")
    assert kit.world.pinned == kit.world.running == "0.2.0"
    assert transaction.backup_id == "b1"
    assert transaction.fingerprint_before == "schema-1"
    assert kit.steps(transaction) == [*FORWARD, "SUCCEEDED"]
    assert kit.world.calls[:4] == [
        "backup (before upgrade to 0.2.0)",
        "pull 0.2.0",
        "pin 0.2.0",
        "up 0.2.0",
    ]
    assert transaction.finished_at is not None


async def test_policy_target_is_used_without_to(tmp_path: Path) -> None:
    kit = make_kit(tmp_path)

    result = await kit.engine.upgrade()

    assert result.transaction.to_version == "0.2.3"


async def test_a_rolled_back_release_is_not_picked_again_unless_asked_for(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False)})
    kit = make_kit(tmp_path, world)
    assert (await kit.engine.upgrade()).transaction.state is State.ROLLED_BACK

    retried = (await kit.engine.upgrade()).transaction

    assert retried.to_version == "0.2.1"
    assert retried.state is State.SUCCEEDED
    world.pinned = world.running = "0.1.10"
    asked = (await kit.engine.upgrade(to="0.2.3")).transaction
    assert asked.to_version == "0.2.3"


async def test_never_healthy_release_rolls_back_without_restore(tmp_path: Path) -> None:
    world = World(releases={"0.2.1": FakeRelease(healthy=False)})
    kit = make_kit(tmp_path, world)

    transaction = (await kit.engine.upgrade(to="0.2.1")).transaction

    assert transaction.state is State.ROLLED_BACK
    assert not transaction.restored
    assert kit.backups.restored == []
    assert kit.world.pinned == kit.world.running == "0.1.10"
    assert kit.steps(transaction) == [*FORWARD, *IMAGE_ROLLBACK]
    assert "not healthy after 3 checks" in (transaction.reason or "")
    assert transaction.safety_backup_id is None
    assert kit.clock.slept == pytest.approx(4.0, abs=0.1)  # 3 checks, one every 2 s


async def test_release_that_migrates_then_fails_is_restored(tmp_path: Path) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3, data_change="converted")})
    kit = make_kit(tmp_path, world)

    transaction = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert transaction.state is State.ROLLED_BACK
    assert transaction.restored
    assert transaction.fingerprint_after == "schema-3"
    assert transaction.data_aside == "/srv/data.replaced-tx1"
    assert (world.schema, world.data, world.rows) == (1, "original data", "original rows")
    assert kit.steps(transaction) == [*FORWARD, *RESTORING_ROLLBACK]
    restore_at = world.calls.index("restore b1")
    assert world.calls[restore_at - 5 : restore_at] == [
        "check backup b1",
        "ensure images 0.1.10",
        "stop api",
        "backup (state replaced by transaction #1 (upgrade))",
        "check backup b1",
    ]
    assert world.calls[restore_at + 1 :] == ["pin 0.1.10", "up 0.1.10"]
    assert transaction.safety_backup_id == "b2"
    assert world.backups["b2"].rows == "rows migrated by 0.2.3"


async def test_a_migration_that_commits_after_the_health_budget_is_still_restored(
    tmp_path: Path,
) -> None:
    """The failed release's migration finishes only as its container stops: the schema is read
    after the stop, so the rollback restores instead of running old code on a new schema."""
    world = World(releases={"0.2.3": FakeRelease(healthy=False)})
    kit = make_kit(tmp_path, world)
    stop = kit.deployment.stop

    async def stop_while_the_migration_commits(services: Sequence[str]) -> None:
        if world.running == "0.2.3":
            world.schema, world.rows = 3, "rows migrated late by 0.2.3"
        await stop(services)

    kit.deployment.stop = stop_while_the_migration_commits  # type: ignore[method-assign]

    transaction = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert transaction.state is State.ROLLED_BACK
    assert transaction.restored
    assert transaction.fingerprint_after == "schema-3"
    assert (world.schema, world.rows) == (1, "original rows")
    assert kit.steps(transaction) == [*FORWARD, *RESTORING_ROLLBACK]


async def test_an_unreadable_schema_is_restored_to_be_safe(tmp_path: Path) -> None:
    world = World(releases={"0.2.1": FakeRelease(healthy=False)})
    kit = make_kit(tmp_path, world)
    fingerprint = kit.backups.fingerprint

    async def unreadable_once_the_app_stopped() -> str:
        if world.stopped:
            raise BackupError("psql: connection refused")
        return await fingerprint()

    kit.backups.fingerprint = unreadable_once_the_app_stopped  # type: ignore[method-assign]

    transaction = (await kit.engine.upgrade(to="0.2.1")).transaction

    assert transaction.state is State.ROLLED_BACK
    assert transaction.restored
    assert transaction.fingerprint_after is None
    assert any("could not be read, restoring to be safe" in line for line in kit.reports)


async def test_a_failed_safety_backup_restores_nothing(tmp_path: Path) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3)})
    backups = FakeBackups(world)
    kit = make_kit(tmp_path, world, backups=backups)
    create = backups.create

    async def only_the_first_backup_works(**arguments: Any) -> Any:
        if backups.backups:
            raise BackupError("disk full")
        return await create(**arguments)

    backups.create = only_the_first_backup_works  # type: ignore[method-assign]

    transaction = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert transaction.state is State.ROLLBACK_FAILED
    assert "disk full" in (transaction.reason or "")
    assert backups.restored == []
    assert (world.schema, world.rows) == (3, "rows migrated by 0.2.3")
    assert kit.steps(transaction)[-2:] == ["SAFETY_BACKUP", "ROLLBACK_FAILED"]


async def test_failed_pull_aborts_before_touching_anything(tmp_path: Path) -> None:
    world = World()
    kit = make_kit(tmp_path, deployment=FakeDeployment(world, missing=["0.2.0"]))
    serial = world.container_serial

    transaction = (await kit.engine.upgrade(to="0.2.0")).transaction

    assert transaction.state is State.ABORTED
    assert world.pinned == world.running == "0.1.10"
    assert world.container_serial == serial
    assert not any(call.startswith(("pin", "up")) for call in world.calls)
    assert kit.steps(transaction) == ["PLANNED", "BACKING_UP", "PULLING", "ABORTED"]


async def test_failed_backup_means_no_upgrade(tmp_path: Path) -> None:
    world = World()
    kit = make_kit(tmp_path, world, backups=FakeBackups(world, create_fails=True))

    transaction = (await kit.engine.upgrade(to="0.2.0")).transaction

    assert transaction.state is State.ABORTED
    assert "pg_dump" in (transaction.reason or "")
    assert [call for call in world.calls if not call.startswith("backup")] == []


async def test_compose_up_failure_rolls_back(tmp_path: Path) -> None:
    world = World()
    kit = make_kit(tmp_path, deployment=FakeDeployment(world, up_fails=True))

    transaction = (await kit.engine.upgrade(to="0.2.0")).transaction

    assert transaction.state is State.ROLLBACK_FAILED
    assert world.pinned == "0.1.10"
    assert "compose up failed" in (transaction.reason or "")


async def test_rollback_that_cannot_restart_the_old_version_fails_loudly(tmp_path: Path) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3)})
    kit = make_kit(tmp_path, world, backups=FakeBackups(world, restore_fails=True))

    transaction = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert transaction.state is State.ROLLBACK_FAILED
    assert "pg_restore failed" in (transaction.reason or "")
    assert any("ROLLBACK FAILED" in line for line in kit.reports)
    with pytest.raises(NeedsAPerson):
        await kit.engine.upgrade(to="0.2.0")


async def test_stop_request_before_start_aborts_and_restores_env(tmp_path: Path) -> None:
    kit = make_kit(tmp_path)
    original_pin = kit.deployment.pin

    def pin_then_stop(version: str) -> None:
        original_pin(version)
        if version == "0.2.0":
            kit.stop.request("SIGTERM")

    kit.deployment.pin = pin_then_stop  # type: ignore[method-assign]

    transaction = (await kit.engine.upgrade(to="0.2.0")).transaction

    assert transaction.state is State.ABORTED
    assert "SIGTERM" in (transaction.reason or "")
    assert kit.world.pinned == kit.world.running == "0.1.10"


@pytest.mark.parametrize(
    ("to", "message"),
    [
        ("1.0.0", "is not a tag"),
        ("0.3.0", "not an upgrade of at most one minor step"),
        ("0.1.9", "not an upgrade"),
        ("latest", "not a semver version"),
    ],
)
async def test_explicit_target_must_fit_the_policy(tmp_path: Path, to: str, message: str) -> None:
    kit = make_kit(tmp_path)

    with pytest.raises(SpecivodError, match=message):
        await kit.engine.upgrade(to=to)

    assert kit.journal.latest() is None
    assert kit.world.calls == []


async def test_force_allows_a_larger_step(tmp_path: Path) -> None:
    kit = make_kit(tmp_path)

    transaction = (await kit.engine.upgrade(to="0.3.0", force=True)).transaction

    assert transaction.state is State.SUCCEEDED


async def test_up_to_date_deployment_has_nothing_to_do(tmp_path: Path) -> None:
    kit = make_kit(tmp_path, World(pinned="0.3.0", running="0.3.0"))

    with pytest.raises(NothingToDo, match="newest version allowed"):
        await kit.engine.upgrade()


async def test_closed_window_blocks_unattended_upgrades_only(tmp_path: Path) -> None:
    kit = make_kit(tmp_path, windows=[])

    with pytest.raises(WindowClosed, match="never"):
        await kit.engine.upgrade(to="0.2.0")
    transaction = (await kit.engine.upgrade(to="0.2.0", ignore_window=True)).transaction

    assert transaction.state is State.SUCCEEDED
