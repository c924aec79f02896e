"""Attack review V (today's W2 fix: a RESTORING that finds the app running goes back to
SAFETY_BACKUP): one transaction can now take several safety backups, but the journal names only
the last (``safety_backup_id``), and retention protects only the backups the journal names.
Fixed: the journal keeps the earlier ones (``earlier_safety_backups``) and retention protects them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from specivod.domain.errors import BackupError
from specivod.domain.states import State
from specivod.engine.journal import Journal
from tests.unit.engine_kit import Crash, make_kit
from tests.unit.fakes import FakeBackups, FakeDeployment, FakeRelease, FakeRestore, World


class KilledMidRestore(FakeBackups):
    """The first restore puts the database back and is killed before the data dir (a host
    crash in the middle of a restore); every later restore fails (a checksum mismatch)."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.restores = 0

    async def restore(
        self, backup_id: str, *, verify: bool = True, data_aside: Path | None = None
    ) -> FakeRestore:
        self.restores += 1
        self.world.calls.append(f"restore {backup_id}")
        if self.restores == 1:
            backup = self.backups[backup_id]
            self.world.schema, self.world.rows = backup.schema, backup.rows
            raise Crash("killed in the middle of the restore")
        raise BackupError(f"backup {backup_id}: checksum mismatch in db.dump")


async def test_every_safety_backup_of_a_failed_rollback_is_kept(tmp_path: Path) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3)})
    backups = KilledMidRestore(world)
    first = make_kit(tmp_path, deployment=FakeDeployment(world), backups=backups)
    with pytest.raises(Crash):
        await first.engine.upgrade(to="0.2.3")
    first.journal.close()
    # b1 before the upgrade; b2 the safety backup: the rows the failed release wrote.
    assert backups.backups["b2"].rows == "rows migrated by 0.2.3"
    assert world.rows == "original rows", "the database was restored before the kill"

    world.stopped = False  # the host boots: dockerd starts the api (restart: always)
    second = make_kit(
        tmp_path, deployment=FakeDeployment(world), backups=backups, journal=Journal(tmp_path)
    )
    recovered = await second.engine.recover()

    assert recovered is not None and recovered.state is State.ROLLBACK_FAILED
    # b3: the half-restored database the api ran on after the boot.
    assert backups.backups["b3"].rows == "original rows"
    assert recovered.safety_backup_id == "b3"
    needed = second.journal.backups_still_needed()
    assert "b2" in needed, (
        f"retention protects only {needed}: b2, the only copy of the failed release's rows, "
        "goes once older than backup.keep_set_aside_for"
    )
