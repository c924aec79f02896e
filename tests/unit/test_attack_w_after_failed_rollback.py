"""Attack review W (a different command after ROLLBACK_FAILED): the runbook's ``specivod restore``
that cannot take its safety backup "starts the app again" — but after a rollback that failed in
RESTORING nothing was serving: what it starts is the failed release, pinned in ``.env`` and never
healthy, over the half-restored state. Fixed: a rollback or restore journals the app services
running when it began (``serving``) and starts only those again."""

from __future__ import annotations

from pathlib import Path

from specivod.domain.states import State
from tests.unit.engine_kit import make_kit
from tests.unit.fakes import FakeBackups, FakeRelease, World


async def test_a_restore_that_cannot_keep_the_state_after_a_failed_rollback_starts_nothing(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3)})
    backups = FakeBackups(world, restore_fails=True)
    kit = make_kit(tmp_path, world, backups=backups)
    failed = (await kit.engine.upgrade(to="0.2.3")).transaction
    assert failed.state is State.ROLLBACK_FAILED and failed.backup_id is not None
    assert world.stopped and world.pinned == "0.2.3"  # nothing serves; .env pins the failed one

    # The runbook: restore the backup the upgrade made. The backup dir has no room left for the
    # safety backup now (the failed restore's own leftovers, say).
    backups.restore_fails, backups.create_fails = False, True
    aborted = (await kit.engine.restore(failed.backup_id, "0.1.10")).transaction

    assert aborted.state is State.ABORTED
    assert world.stopped, (
        f"the restore started {world.running} (never healthy, pinned by the failed upgrade): "
        f"{aborted.reason}"
    )
