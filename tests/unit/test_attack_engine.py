"""Hostile sequences on the engine: each test is one concrete chain of events that loses data or
leaves the wrong version running (or the app stopped when it could serve). A test marked
``xfail(strict=True)`` proves a defect on the current code; the lead removes the marker when
fixing it. Unmarked tests are sequences that held and guard something real."""

from __future__ import annotations

import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

import pytest

from specivod.adapters.backup.backups import Backups
from specivod.adapters.process import Completed
from specivod.domain.errors import DeploymentError
from specivod.domain.states import State
from specivod.engine.service import NeedsAPerson
from specivod.settings import BackupSettings
from tests.unit.engine_kit import Kit, make_kit
from tests.unit.fakes import FakeBackup, FakeBackups, FakeDeployment, FakeRelease, World

# --- fakes with one more property of the real world each ---------------------------------------


class WritesWhileServing(FakeBackups):
    """A user keeps writing while the app serves: right after a backup's snapshot is taken,
    a row is written if the app is still running (pg_dump sees a snapshot from its start; a dump
    of a real database takes minutes)."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.late_rows = "a row written after the snapshot, while the app still served"

    async def create(
        self,
        *,
        version: str | None,
        reason: str,
        protect: Sequence[str] = (),
        keep_set_aside: Sequence[str] = (),
        safety: bool = False,
    ) -> FakeBackup:
        backup = await super().create(
            version=version,
            reason=reason,
            protect=protect,
            keep_set_aside=keep_set_aside,
            safety=safety,
        )
        if not self.world.stopped and "state replaced" in reason:
            self.world.rows = self.late_rows
        return backup


class LocalImages(FakeDeployment):
    """Images live on the host until pruned; ``up`` of a version whose image is not on the host
    pulls it (compose's default ``pull_policy: missing``), which fails while the registry does
    not serve it (``missing``)."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.local = {world.running} if world.running else set()

    async def pull(self, version: str) -> None:
        await super().pull(version)
        self.local.add(version)

    async def up(self, version: str) -> None:
        if version not in self.local:
            self.world.calls.append(f"up {version} (pulls first)")
            if version in self.missing:
                raise DeploymentError(f"up: pull {version}: registry unreachable")
            self.local.add(version)
        await super().up(version)


# --- 1. the refusal after ROLLBACK_FAILED ------------------------------------------------------


def _failed_rollback_kit(tmp_path: Path) -> Kit:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3)})
    return make_kit(tmp_path, world, backups=FakeBackups(world, restore_fails=True))


async def test_an_aborted_restore_does_not_clear_the_refusal_after_rollback_failed(
    tmp_path: Path,
) -> None:
    kit = _failed_rollback_kit(tmp_path)
    failed = (await kit.engine.upgrade(to="0.2.3")).transaction
    assert failed.state is State.ROLLBACK_FAILED
    kit.backups.restore_fails = False

    # The runbook: restore the backup. This one cannot start (a backup that does not verify;
    # a Ctrl-C before the app is stopped does the same) and ends ABORTED, nothing touched.
    aborted = (await kit.engine.restore("b-damaged", "0.1.10")).transaction
    assert aborted.state is State.ABORTED

    # Nobody repaired anything, nobody ran `resolve` or `--force`: the deployment still needs a
    # person, and the daemon's next window must not upgrade it.
    with pytest.raises(NeedsAPerson):
        await kit.engine.upgrade()


async def test_the_refusal_after_rollback_failed_holds_without_other_transactions(
    tmp_path: Path,
) -> None:
    kit = _failed_rollback_kit(tmp_path)
    await kit.engine.upgrade(to="0.2.3")

    with pytest.raises(NeedsAPerson):
        await kit.engine.upgrade()


# --- 2. rows written between the safety backup and the stop -------------------------------------


def _rows_at_stop(kit: Kit) -> list[str]:
    """What the database holds when the app stops: every one of those rows must survive."""
    seen: list[str] = []
    stop = kit.deployment.stop

    async def stop_and_look(services: Sequence[str]) -> None:
        await stop(services)
        seen.append(kit.world.rows)

    kit.deployment.stop = stop_and_look  # type: ignore[method-assign]
    return seen


async def test_rows_written_after_the_safety_backup_of_a_manual_rollback_survive(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.0": FakeRelease(schema=2)})
    backups = WritesWhileServing(world)
    kit = make_kit(tmp_path, world, backups=backups)
    assert (await kit.engine.upgrade(to="0.2.0")).transaction.state is State.SUCCEEDED
    world.rows = "rows written on 0.2.0"
    at_stop = _rows_at_stop(kit)

    rollback = (await kit.engine.rollback()).transaction

    assert rollback.state is State.ROLLED_BACK
    assert world.schema == 1
    kept = {backup.rows for backup in backups.backups.values()} | {world.rows}
    assert at_stop and at_stop[0] in kept, "a row a user wrote before the app stopped is gone"


async def test_rows_written_after_the_safety_backup_of_a_restore_survive(tmp_path: Path) -> None:
    world = World()
    backups = WritesWhileServing(world)
    kit = make_kit(tmp_path, world, backups=backups)
    old = await backups.create(version="0.1.10", reason="manual")
    world.rows = "rows written since the manual backup"
    at_stop = _rows_at_stop(kit)

    restore = (await kit.engine.restore(old.id, "0.1.10")).transaction

    assert restore.state is State.ROLLED_BACK
    kept = {backup.rows for backup in backups.backups.values()} | {world.rows}
    assert at_stop and at_stop[0] in kept, "a row a user wrote before the app stopped is gone"


async def test_the_safety_backup_of_a_failed_upgrade_is_taken_after_the_stop(
    tmp_path: Path,
) -> None:
    """The automatic rollback saves the failed release's rows only once it is stopped."""
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3)})
    backups = WritesWhileServing(world)
    kit = make_kit(tmp_path, world, backups=backups)

    rolled = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert rolled.state is State.ROLLED_BACK
    safety = backups.backups[str(rolled.safety_backup_id)]
    assert safety.rows == "rows migrated by 0.2.3"
    assert backups.late_rows not in {b.rows for b in backups.backups.values()}


# --- 3. a manual rollback whose previous image is gone -----------------------------------------


async def test_a_manual_rollback_whose_image_cannot_be_had_leaves_the_app_serving(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.0": FakeRelease(schema=2)})
    deployment = LocalImages(world)
    kit = make_kit(tmp_path, world, deployment=deployment)
    assert (await kit.engine.upgrade(to="0.2.0")).transaction.state is State.SUCCEEDED
    deployment.local.discard("0.1.10")  # unused since the upgrade: pruned
    deployment.missing.add("0.1.10")  # and the registry cannot serve it right now

    rollback = (await kit.engine.rollback()).transaction

    # Pull before stop, as the upgrade pulls before pin: registry trouble costs no downtime.
    assert rollback.state is State.ABORTED, rollback.reason
    assert not world.stopped and world.running == "0.2.0"
    assert world.schema == 2 and world.pinned == "0.2.0"


async def test_a_restore_whose_image_cannot_be_had_leaves_the_app_serving(tmp_path: Path) -> None:
    world = World(pinned="0.2.0", running="0.2.0", schema=2)
    deployment = LocalImages(world)
    backups = FakeBackups(world)
    kit = make_kit(tmp_path, world, deployment=deployment, backups=backups)
    backups.backups["b1"] = FakeBackup("b1", 1, "data at 0.1.10", "rows at 0.1.10", "0.1.10")
    deployment.missing.add("0.1.10")

    restore = (await kit.engine.restore("b1", "0.1.10")).transaction

    assert restore.state is State.ABORTED, restore.reason
    assert not world.stopped and world.running == "0.2.0"


# --- 4 and 5. real backups (a fake PostgreSQL in the container, a real data dir on disk) -------

DUMP = b"PGDMP" + bytes(range(256)) * 40
TABLE_OF_CONTENTS = "215; 1259 16386 TABLE public issues specivo\n"


@dataclass
class FakePostgres:
    """``docker compose exec -T db ...`` answered like PostgreSQL would, for ``Backups``."""

    data: Path
    restores: int = 0
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def data_dir(self) -> Path | None:
        return self.data

    async def compose(
        self,
        *arguments: str,
        version: str | None = None,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        command = arguments[3:]
        self.calls.append(command)
        if command[0] == "pg_dump":
            assert stdout is not None
            stdout.write(b"CREATE TABLE issues;\n" if "--schema-only" in command else DUMP)
            stdout.flush()
            return Completed(command, 0, "", "")
        if command[:2] == ("pg_restore", "--list"):
            return Completed(command, 0, TABLE_OF_CONTENTS, "")
        if command[:2] == ("sh", "-c"):
            assert stdin is not None
            stdin.read()
            self.restores += 1
            return Completed(command, 0, "", "")
        if command[0] == "psql":
            return Completed(command, 0, "5000\n", "")
        raise AssertionError(f"unexpected command {command}")


class Real(NamedTuple):
    backups: Backups
    postgres: FakePostgres
    data: Path


def _real_backups(tmp_path: Path, *, keep: int = 5) -> Real:
    data = tmp_path / "project" / "data"
    (data / "attachments").mkdir(parents=True)
    (data / "attachments" / "upload.bin").write_bytes(b"x" * 100_000)
    (data / "FORMAT").write_text("format 1\n")
    postgres = FakePostgres(data)
    settings = BackupSettings(dir=tmp_path / "backups", keep=keep, min_free_bytes=0)
    return Real(Backups(settings, postgres), postgres, data)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()
    }


class Disk:
    """A file system of ``capacity`` bytes holding the project (its data dir) and the backups."""

    def __init__(self, root: Path, capacity: int) -> None:
        self.roots = [root / "project", root / "backups"]
        self.capacity = capacity

    def used(self) -> int:
        """Bytes of the regular files, each inode once (snapshots hard-link unchanged files)."""
        sizes = {}
        for root in self.roots:
            for path in root.rglob("*"):
                status = path.lstat()
                if stat.S_ISREG(status.st_mode):
                    sizes[(status.st_dev, status.st_ino)] = status.st_size
        return sum(sizes.values())

    def usage(self, _path: object) -> tuple[int, int, int]:
        used = self.used()
        return self.capacity, used, self.capacity - used


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    disk = Disk(tmp_path, 1 << 40)

    class Usage(NamedTuple):
        total: int
        used: int
        free: int

    monkeypatch.setattr(
        "specivod.adapters.backup.store.shutil.disk_usage", lambda path: Usage(*disk.usage(path))
    )
    monkeypatch.setattr(
        "specivod.adapters.backup.datadir.shutil.disk_usage", lambda path: Usage(*disk.usage(path))
    )
    yield disk


def _kit_on(state_dir: Path, real: Real, world: World | None = None) -> Kit:
    world = world or World()
    return make_kit(state_dir, world, backups=real.backups)  # type: ignore[arg-type]


async def test_a_restore_without_room_for_safety_backup_and_copy_aborts_while_serving(
    tmp_path: Path, small_disk: Disk
) -> None:
    real = _real_backups(tmp_path)
    old = await real.backups.create(version="0.1.10", reason="manual")
    # The failed release rewrote the upload: the safety backup must copy the new one, the
    # restore must copy the old one back. One file system holds the backups and the data dir,
    # with room for one of the two copies only.
    (real.data / "attachments" / "upload.bin").write_bytes(b"y" * 100_000)
    small_disk.capacity = small_disk.used() + old.database.size + 100_000 + 20_000
    kit = _kit_on(tmp_path / "state", real)

    restore = (await kit.engine.restore(old.id, "0.1.10")).transaction

    assert restore.state is State.ABORTED, (restore.state, restore.reason)
    assert "not enough free space" in str(restore.reason)
    assert not kit.world.stopped
    assert (real.data / "attachments" / "upload.bin").read_bytes() == b"y" * 100_000


async def test_a_restore_of_a_few_changed_files_fits_where_a_whole_copy_would_not(
    tmp_path: Path, small_disk: Disk
) -> None:
    real = _real_backups(tmp_path)
    old = await real.backups.create(version="0.1.10", reason="manual")
    expected = _tree(real.data)
    (real.data / "FORMAT").write_text("format 2\n")
    small_disk.capacity = small_disk.used() + old.database.size + 20_000
    assert small_disk.capacity - small_disk.used() < old.data_dir.bytes_total  # type: ignore[union-attr]
    kit = _kit_on(tmp_path / "state", real)

    restore = (await kit.engine.restore(old.id, "0.1.10")).transaction

    assert restore.state is State.ROLLED_BACK, (restore.state, restore.reason)
    assert _tree(real.data) == expected


async def test_a_restore_after_the_journal_was_reset_still_swaps_the_data_dir(
    tmp_path: Path,
) -> None:
    real = _real_backups(tmp_path)
    old = await real.backups.create(version="0.1.10", reason="manual")
    expected = _tree(real.data)
    first = _kit_on(tmp_path / "state-1", real)
    (real.data / "FORMAT").write_text("format 2\n")
    assert (await first.engine.restore(old.id, "0.1.10")).transaction.state is State.ROLLED_BACK
    assert _tree(real.data) == expected
    first.journal.close()

    # A new state dir (a reinstall, a journal moved away after corruption, another --config):
    # transaction ids start again from 1, the replaced data dirs beside the data dir remain.
    (real.data / "FORMAT").write_text("format 3, written after the first restore\n")
    second = _kit_on(tmp_path / "state-2", real)
    restore = (await second.engine.restore(old.id, "0.1.10")).transaction

    assert restore.state is State.ROLLED_BACK
    assert _tree(real.data) == expected, "the data dir was not restored, the database was"


async def test_two_restores_in_a_row_keep_both_replaced_data_dirs(tmp_path: Path) -> None:
    real = _real_backups(tmp_path, keep=1)
    old = await real.backups.create(version="0.1.10", reason="manual")
    kit = _kit_on(tmp_path / "state", real)
    (real.data / "FORMAT").write_text("format 2\n")
    one = (await kit.engine.restore(old.id, "0.1.10")).transaction
    (real.data / "FORMAT").write_text("format 3\n")
    two = (await kit.engine.restore(old.id, "0.1.10")).transaction

    assert one.state is two.state is State.ROLLED_BACK
    assert (Path(str(one.data_aside)) / "FORMAT").read_text() == "format 2\n"
    assert (Path(str(two.data_aside)) / "FORMAT").read_text() == "format 3\n"
    still = {manifest.id for manifest in real.backups.list()}
    assert {old.id, str(two.safety_backup_id)} <= still
