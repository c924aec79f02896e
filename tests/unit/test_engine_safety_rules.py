"""Safety rules of the transaction that mutation testing showed no test would notice: each test
fails when one line of the rule is broken."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from specivod.domain.errors import DeploymentError
from specivod.domain.states import State
from specivod.engine.journal import Journal
from specivod.engine.service import RecoveredFirst, UnversionedPin
from tests.unit.engine_kit import Crash, Kit, crash_after, make_kit
from tests.unit.fakes import FakeBackups, FakeDeployment, FakeRelease, World


@pytest.mark.parametrize("pin", ["latest", "sha256:0123abcd", None])
async def test_an_unversioned_pin_is_a_problem_not_nothing_to_do(
    tmp_path: Path, pin: str | None
) -> None:
    world = World(pinned=pin, running=pin)
    kit = make_kit(tmp_path, world)

    with pytest.raises(UnversionedPin, match="not a semver release"):
        await kit.engine.upgrade()
    with pytest.raises(UnversionedPin):
        await kit.engine.upgrade(to="0.2.0")

    assert world.calls == [], "nothing was touched"


async def test_upgrade_to_with_force_moves_off_an_unversioned_pin(tmp_path: Path) -> None:
    world = World(pinned="latest", running="latest")
    kit = make_kit(tmp_path, world)

    moved = (await kit.engine.upgrade(to="0.2.0", force=True)).transaction

    assert moved.state is State.SUCCEEDED
    assert (moved.from_version, moved.to_version) == ("latest", "0.2.0")
    assert world.pinned == world.running == "0.2.0"


async def test_a_restore_after_a_recovery_stops_there(tmp_path: Path) -> None:
    world = World(releases={"0.2.1": FakeRelease(healthy=False)})
    first = make_kit(tmp_path, world)
    crash_after(first.journal, State.VERIFYING)
    with pytest.raises(Crash):
        await first.engine.upgrade(to="0.2.1")
    first.journal.close()
    restarted = make_kit(tmp_path, world, journal=Journal(tmp_path))

    with pytest.raises(RecoveredFirst) as stopped:
        await restarted.engine.restore("b1", "0.1.10")

    assert stopped.value.recovered.state is State.ROLLED_BACK
    assert not any(call.startswith("restore") for call in world.calls)


async def test_force_lets_an_upgrade_through_after_rollback_failed(tmp_path: Path) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3)})
    kit = make_kit(tmp_path, world, backups=FakeBackups(world, restore_fails=True))
    assert (await kit.engine.upgrade(to="0.2.3")).transaction.state is State.ROLLBACK_FAILED
    world.pinned = world.running = "0.1.10"
    world.stopped = False

    forced = (await kit.engine.upgrade(to="0.2.0", force=True)).transaction

    assert forced.state is State.SUCCEEDED


async def _killed_in_restoring(tmp_path: Path) -> Kit:
    """An upgrade to a release that migrates and fails, killed right after RESTORING is
    journaled (before the restore acts)."""
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3)})
    first = make_kit(tmp_path, world)
    crash_after(first.journal, State.RESTORING)
    with pytest.raises(Crash):
        await first.engine.upgrade(to="0.2.3")
    return first


async def test_the_data_dir_destination_is_journaled_before_the_restore_acts(
    tmp_path: Path,
) -> None:
    first = await _killed_in_restoring(tmp_path)
    world = first.world
    journaled = first.journal.latest()
    assert journaled is not None and journaled.data_aside == "/srv/data.replaced-tx1"
    assert first.backups.restore_arguments == [], "killed before the restore acted"
    first.journal.close()
    restarted = make_kit(tmp_path, world, journal=Journal(tmp_path))

    final = await restarted.engine.recover()

    assert final is not None and final.state is State.ROLLED_BACK
    assert restarted.backups.restore_arguments == [("b1", True, Path("/srv/data.replaced-tx1"))]


async def test_a_resumed_restore_uses_the_journaled_destination(tmp_path: Path) -> None:
    first = await _killed_in_restoring(tmp_path)
    world = first.world
    killed = first.journal.latest()
    assert killed is not None
    first.journal.record(killed, data_aside="/srv/data.replaced-elsewhere")
    first.journal.close()
    restarted = make_kit(tmp_path, world, journal=Journal(tmp_path))

    await restarted.engine.recover()

    assert restarted.backups.restore_arguments == [
        ("b1", True, Path("/srv/data.replaced-elsewhere"))
    ]


async def test_backups_carry_the_version_of_the_data_they_hold(tmp_path: Path) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3)})
    kit = make_kit(tmp_path, world)

    rolled = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert rolled.backup_id is not None and rolled.safety_backup_id is not None
    assert world.backups[rolled.backup_id].version == "0.1.10"
    assert world.backups[rolled.safety_backup_id].version == "0.2.3"


async def test_an_image_rollback_journals_the_schema_it_read(tmp_path: Path) -> None:
    world = World(releases={"0.2.1": FakeRelease(healthy=False)})
    kit = make_kit(tmp_path, world)

    rolled = (await kit.engine.upgrade(to="0.2.1")).transaction

    assert not rolled.restored
    assert rolled.fingerprint_after == rolled.fingerprint_before == "schema-1"


async def test_a_stop_request_during_the_backup_aborts_before_the_pull(tmp_path: Path) -> None:
    world = World()
    backups = FakeBackups(world)
    kit = make_kit(tmp_path, world, backups=backups)
    create = backups.create

    async def back_up_then_sigterm(*, version: str | None, reason: str, **rest: Any) -> object:
        backup = await create(version=version, reason=reason, **rest)
        kit.stop.request("SIGTERM")
        return backup

    backups.create = back_up_then_sigterm  # type: ignore[method-assign, assignment]

    aborted = (await kit.engine.upgrade(to="0.2.0")).transaction

    assert aborted.state is State.ABORTED
    assert "SIGTERM" in (aborted.reason or "")
    assert not any(call.startswith(("pull", "pin", "up")) for call in world.calls)


async def test_a_resumed_upgrade_that_had_not_started_says_why_it_aborted(tmp_path: Path) -> None:
    first = make_kit(tmp_path)
    crash_after(first.journal, State.PULLING)
    with pytest.raises(Crash):
        await first.engine.upgrade(to="0.2.0")
    first.journal.close()
    restarted = make_kit(tmp_path, first.world, journal=Journal(tmp_path))

    final = await restarted.engine.recover()

    assert final is not None and final.state is State.ABORTED
    assert "interrupted in PULLING" in (final.reason or "")


class StartFails(FakeDeployment):
    async def start(self, services: Sequence[str]) -> None:
        raise DeploymentError("compose start: the Docker daemon is gone")


async def test_a_restore_that_cannot_start_the_app_again_fails_loudly(tmp_path: Path) -> None:
    world = World(releases={"0.2.0": FakeRelease(schema=2)})
    backups = FakeBackups(world)
    kit = make_kit(tmp_path, world, deployment=StartFails(world), backups=backups)
    upgrade = (await kit.engine.upgrade(to="0.2.0")).transaction
    assert upgrade.backup_id is not None
    backups.create_fails = True

    failed = (await kit.engine.restore(upgrade.backup_id, "0.1.10")).transaction

    assert failed.state is State.ROLLBACK_FAILED
    assert "pg_dump" in (failed.reason or "") and "Docker daemon is gone" in (failed.reason or "")
    assert backups.restored == []


async def test_a_rollback_starts_again_the_stopped_services_that_up_does_not_recreate(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3)})
    deployment = FakeDeployment(world, versioned=("api",), app_services=("api", "search"))
    kit = make_kit(tmp_path, world, deployment=deployment)

    rolled = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert rolled.state is State.ROLLED_BACK
    assert world.calls[-3:] == ["pin 0.1.10", "up 0.1.10", "start search"]
    assert "stop api search" in world.calls


async def test_a_restore_journaled_without_a_destination_journals_one_before_acting(
    tmp_path: Path,
) -> None:
    first = await _killed_in_restoring(tmp_path)
    world = first.world
    killed = first.journal.latest()
    assert killed is not None
    first.journal.record(killed, data_aside=None)  # as an older specivod journaled it
    first.journal.close()
    restarted = make_kit(tmp_path, world, journal=Journal(tmp_path))

    final = await restarted.engine.recover()

    assert final is not None and final.state is State.ROLLED_BACK
    assert final.data_aside == "/srv/data.replaced-tx1"
    assert restarted.backups.restore_arguments == [("b1", True, Path("/srv/data.replaced-tx1"))]
