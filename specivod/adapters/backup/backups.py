"""The backup facade: ``Backups`` and what the commands and the daemon use of it (the
package's rule is in its docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from pathlib import Path

from specivod.adapters.backup import datadir
from specivod.adapters.backup.datasync import plan_sync
from specivod.adapters.backup.estimate import BackupEstimate
from specivod.adapters.backup.files import sha256_of
from specivod.adapters.backup.manifest import (
    BackupManifest,
    DatabaseDump,
    DataDirSnapshot,
    Durations,
    check_files,
    write_manifest,
)
from specivod.adapters.backup.postgres import PostgresDatabase
from specivod.adapters.backup.progress import Meter, Progress
from specivod.adapters.backup.restoring import RestoreResult, restore_archive, restore_snapshot
from specivod.adapters.backup.runner import ComposeRunner
from specivod.adapters.backup.set_aside import SetAside, list_set_aside, prune_set_aside
from specivod.adapters.backup.snapshot import Previous, estimate_snapshot, take_snapshot
from specivod.adapters.backup.store import (
    BackupStore,
    format_id,
    ran_out_of_space,
    require_free_space,
    select_expired,
    snapshot_does_not_fit,
)
from specivod.adapters.clock import Clock, SystemClock
from specivod.domain.errors import BackupError
from specivod.settings import BackupSettings, Settings

__all__ = [
    "BackupEstimate",
    "BackupManifest",
    "Backups",
    "Progress",
    "RestoreResult",
    "SetAside",
    "backups_in",
    "take_snapshot",
]

log = logging.getLogger(__name__)

DUMP_NAME = "database.dump"
SNAPSHOT_TREE = "data"
SNAPSHOT_INDEX = "data.index"


def backups_in(directory: Path) -> list[BackupManifest]:
    """Complete backups in ``directory``, newest first (reads nothing but that directory)."""
    return BackupStore(directory).manifests()


class Backups:
    """Create, list, verify, prune and restore backups of one deployment."""

    def __init__(
        self,
        settings: Settings | BackupSettings,
        deployment: ComposeRunner,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(settings, Settings):
            settings = settings.backup
        self._settings = settings
        self._deployment = deployment
        self._clock = clock or SystemClock()
        self._store = BackupStore(settings.dir)
        self._database = PostgresDatabase(deployment, settings)

    @property
    def directory(self) -> Path:
        return self._store.directory

    def get(self, backup_id: str) -> BackupManifest:
        return self._store.get(backup_id)

    def path(self, backup_id: str) -> Path:
        return self._store.path(backup_id)

    async def fingerprint(self) -> str:
        return await self._database.fingerprint()

    async def end_other_sessions(self) -> list[str]:
        return await self._database.end_other_sessions()

    async def create(
        self,
        *,
        version: str | None,
        reason: str,
        progress: Progress | None = None,
        protect: Collection[str] = (),
        keep_set_aside: Collection[str] = (),
        safety: bool = False,
    ) -> BackupManifest:
        """A new valid backup, then retention (keeping this one, the backups in ``protect`` and
        the set-aside trees in ``keep_set_aside``). A ``safety`` backup is the one taken just
        before a restore: retention keeps it by age instead of counting it."""
        try:
            manifest = await self._create(version, reason, progress, safety)
        except OSError as error:
            raise BackupError(f"backup failed: {error}") from None
        self.prune(self._settings.keep, {manifest.id, *protect}, keep_set_aside)
        return manifest

    async def _create(
        self, version: str | None, reason: str, progress: Progress | None, safety: bool
    ) -> BackupManifest:
        self._store.ensure()
        self._store.remove_leftovers()
        data_dir = self._data_dir()
        if not data_dir.is_dir():
            raise BackupError(f"the data dir {data_dir} does not exist or is not a directory")
        base = self._base_for(data_dir)
        estimate = await self._estimate(data_dir, base)
        log.info("%s", estimate.describe())
        require_free_space(
            self._store.free_bytes(),
            estimate.bytes_needed,
            int(self._settings.min_free_bytes),
            self.directory,
        )
        created_at = self._clock.now()
        backup_id = self._store.new_id(created_at)
        work = self._store.start(backup_id)
        log.info("backing up the database and %s into %s", data_dir, self.path(backup_id))
        try:
            database, database_seconds, fingerprint = await self._dump(work, progress)
            try:
                snapshot, data_dir_seconds = await self._snapshot(
                    data_dir, base, work, estimate.data.bytes_to_copy, progress
                )
            except BackupError as error:
                free = self._store.free_bytes()
                if not ran_out_of_space(str(error), free):
                    raise
                needed = database.size + estimate.data.bytes_needed
                min_free = int(self._settings.min_free_bytes)
                raise snapshot_does_not_fit(
                    self.directory, needed, free, min_free, str(error)
                ) from None
            manifest = BackupManifest(
                id=backup_id,
                created_at=created_at,
                version=version,
                reason=reason,
                database=database,
                data_dir=snapshot,
                fingerprint=fingerprint,
                durations=Durations(
                    database_seconds=round(database_seconds, 3),
                    data_dir_seconds=round(data_dir_seconds, 3),
                    total_seconds=round(database_seconds + data_dir_seconds, 3),
                ),
                valid=True,
                safety=safety,
            )
            write_manifest(work, manifest)
            self._store.complete(backup_id)
        except BaseException:
            self._store.discard(backup_id)
            raise
        return manifest

    async def _dump(self, work: Path, progress: Progress | None) -> tuple[DatabaseDump, float, str]:
        started = self._clock.monotonic()
        fingerprint = await self._database.fingerprint()
        previous = next((m.database.size for m in self.list() if m.valid), None)
        dump = work / DUMP_NAME
        await self._database.dump(dump, Meter(progress, "database dump", previous).at)
        size = dump.stat().st_size
        sha256 = await asyncio.to_thread(sha256_of, dump, Meter(progress, "checksum", size).add)
        relations = await self._database.relations(dump)
        record = DatabaseDump(
            DUMP_NAME, size, sha256, self._database.dump_format, relations=sorted(relations)
        )
        return record, self._clock.monotonic() - started, fingerprint

    async def _snapshot(
        self,
        data_dir: Path,
        base: BackupManifest | None,
        work: Path,
        expected: int,
        progress: Progress | None,
    ) -> tuple[DataDirSnapshot, float]:
        started = self._clock.monotonic()
        summary = await asyncio.to_thread(
            take_snapshot,
            data_dir,
            work / SNAPSHOT_TREE,
            work / SNAPSHOT_INDEX,
            self._previous(base),
            checksum=self._settings.checksum,
            done=Meter(progress, "data dir snapshot", expected).add,
        )
        record = DataDirSnapshot(
            source=str(data_dir),
            tree=SNAPSHOT_TREE,
            index=SNAPSHOT_INDEX,
            index_sha256=summary.index_sha256,
            file_count=summary.files,
            bytes_total=summary.bytes_total,
            files_copied=summary.files_copied,
            bytes_copied=summary.bytes_copied,
            files_linked=summary.files_linked,
            bytes_linked=summary.bytes_linked,
            reflinked=summary.reflinked,
            base=base.id if base is not None else None,
            vanished_while_archived=summary.vanished,
            changed_while_archived=summary.changed,
            flagged=summary.flagged,
            skipped=summary.skipped,
        )
        return record, self._clock.monotonic() - started

    def _base_for(self, data_dir: Path) -> BackupManifest | None:
        """The newest valid snapshot of this data dir whose files are still there to link to."""
        for manifest in self.list():
            snapshot = manifest.data_dir
            if (
                manifest.valid
                and isinstance(snapshot, DataDirSnapshot)
                and snapshot.source == str(data_dir)
                and (self.path(manifest.id) / snapshot.index).is_file()
            ):
                return manifest
        return None

    def _previous(self, base: BackupManifest | None) -> Previous | None:
        if base is None or not isinstance(base.data_dir, DataDirSnapshot):
            return None
        directory = self.path(base.id)
        return Previous(directory / base.data_dir.tree, directory / base.data_dir.index)

    async def _estimate(self, data_dir: Path, base: BackupManifest | None) -> BackupEstimate:
        database = next((m.database.size for m in self.list() if m.valid), None)
        if database is None:
            database = await self._database.size()
        data = await asyncio.to_thread(estimate_snapshot, data_dir, self._previous(base))
        return BackupEstimate(database, data, base.id if base is not None else None)

    async def estimate(self) -> BackupEstimate:
        """What the next backup will write: the database dump (as big as the last one) and the
        files of the data dir that changed since the last snapshot. Reads no file's content."""
        data_dir = self._data_dir()
        if not data_dir.is_dir():
            raise BackupError(f"the data dir {data_dir} does not exist or is not a directory")
        return await self._estimate(data_dir, self._base_for(data_dir))

    def _data_dir(self) -> Path:
        data_dir = self._deployment.data_dir()
        if data_dir is None:
            raise BackupError("the deployment's env file names no data dir to back up")
        data_dir = data_dir.resolve()
        backups = self.directory.resolve()
        if backups.is_relative_to(data_dir) or data_dir.is_relative_to(backups):
            raise BackupError(
                f"the backup directory {backups} and the data dir {data_dir} lie inside one "
                "another: a backup would copy itself; point backup.dir elsewhere"
            )
        return data_dir

    def prune(
        self, keep: int, protected_ids: Collection[str] = (), keep_set_aside: Collection[str] = ()
    ) -> list[str]:
        """Delete all but the newest ``keep`` valid backups and the safety backups and
        set-aside trees older than ``backup.keep_set_aside_for``, never a protected one; the ids
        of the deleted backups."""
        now = self._clock.now()
        max_age = self._settings.keep_set_aside_for
        deleted = []
        expired = select_expired(self.list(), keep, protected_ids, now=now, safety_max_age=max_age)
        for backup_id in expired:
            try:
                self._store.delete(backup_id)
            except OSError as error:
                log.warning("cannot delete old backup %s: %s", backup_id, error)
            else:
                deleted.append(backup_id)
        with contextlib.suppress(BackupError):
            prune_set_aside(self._data_dir(), max_age, now, keep_set_aside)
        return deleted

    def set_aside(self) -> list[SetAside]:
        """The trees restores set aside beside the data dir, newest first, with their sizes."""
        return list_set_aside(self._data_dir())

    async def verify(
        self, backup_id: str, progress: Progress | None = None, *, read_snapshot: bool = True
    ) -> BackupManifest:
        """The manifest, once its files are checked against their sizes and sha256 (for a
        snapshot, without ``read_snapshot``, only its index and every file's presence and size:
        a restore checks each file it copies)."""
        manifest = self.get(backup_id)
        if not manifest.valid:
            raise BackupError(f"backup {backup_id} is marked invalid")
        data_dir = manifest.data_dir
        if isinstance(data_dir, DataDirSnapshot):
            to_read = data_dir.bytes_total if read_snapshot else 0
        else:
            to_read = data_dir.size
        meter = Meter(progress, "verify", manifest.database.size + to_read)
        await asyncio.to_thread(
            check_files,
            self.path(backup_id),
            manifest,
            meter.add,
            read_snapshot=read_snapshot,
        )
        return manifest

    def version_of(self, backup_id: str) -> str | None:
        """The version deployed when the backup was taken."""
        return self.get(backup_id).version

    def data_aside_path(self, label: str) -> Path:
        """Where a restore given this label (a transaction's, such as ``tx42``) sets aside what
        it replaces: ``<data dir>.replaced-<time>-<label>`` beside it, or with ``-1``, ``-2``...
        appended when that exists already: the caller journals the path before the restore
        acts, so an existing one is never ours. Creates nothing."""
        if not label or "/" in label or label in (".", ".."):
            raise BackupError(f"{label!r} cannot name the replaced data dir")
        data_dir = self._data_dir()
        return datadir.free_sibling(data_dir, f".replaced-{format_id(self._clock.now())}-{label}")

    async def prepare_restore(
        self, backup_id: str, progress: Progress | None = None
    ) -> BackupManifest:
        """Every check a restore can make before it changes anything: the backup is valid, its
        files match the manifest, and the data dir has room for what the restore copies."""
        manifest = await self.verify(backup_id, progress, read_snapshot=False)
        data_dir = self._data_dir()
        snapshot = manifest.data_dir
        if isinstance(snapshot, DataDirSnapshot):
            directory = self.path(backup_id)
            plan = await asyncio.to_thread(
                plan_sync,
                directory / snapshot.tree,
                directory / snapshot.index,
                data_dir,
                checksum=self._settings.checksum,
            )
            datadir.check_sync_room(data_dir, plan)
        else:
            datadir.check_restorable(data_dir, snapshot.size, backup_id)
        return manifest

    async def restore(
        self,
        backup_id: str,
        progress: Progress | None = None,
        *,
        verify: bool = True,
        data_aside: Path | None = None,
    ) -> RestoreResult:
        """Restore the database and the data dir (the app services must be stopped); the backup
        is checked first unless the caller has just done so.

        What the restore replaces goes to ``data_aside`` (see ``data_aside_path``), or to a new
        ``.replaced-<time>`` sibling when it is ``None``: for a snapshot, the files it replaced
        or removed; for an archive taken before snapshots, the whole data dir. Given the same
        ``data_aside`` again after an interruption, the restore finishes what the first
        attempt began (see ``restoring``). The database is restored again in every case (the
        restore replaces it whole)."""
        try:
            return await self._restore(backup_id, progress, verify, data_aside)
        except OSError as error:
            raise BackupError(f"restore of {backup_id} failed: {error}") from None

    async def _restore(
        self, backup_id: str, progress: Progress | None, verify: bool, data_aside: Path | None
    ) -> RestoreResult:
        started = self._clock.monotonic()
        manifest = (
            await self.verify(backup_id, progress, read_snapshot=False)
            if verify
            else self.get(backup_id)
        )
        if not manifest.valid:
            raise BackupError(f"backup {backup_id} is marked invalid")
        data_dir = self._data_dir()
        if str(data_dir) != manifest.data_dir.source:
            log.warning(
                "backup %s was taken of %s; restoring into %s, the data dir the env file names now",
                backup_id,
                manifest.data_dir.source,
                data_dir,
            )

        def default_aside() -> Path:
            return datadir.free_sibling(data_dir, f".replaced-{format_id(self._clock.now())}")

        if manifest.is_snapshot:
            aside = await restore_snapshot(
                manifest,
                self.path(backup_id),
                data_dir=data_dir,
                database=self._database,
                replaced=data_aside or default_aside(),
                checksum=self._settings.checksum,
                progress=progress,
            )
        else:
            aside = await restore_archive(
                manifest,
                self.path(backup_id),
                data_dir=data_dir,
                database=self._database,
                data_aside=data_aside,
                default_aside=default_aside,
                progress=progress,
            )
        return RestoreResult(manifest, data_dir, aside, self._clock.monotonic() - started)

    # Last in the class: a method named ``list`` hides the builtin from the annotations below it.
    def list(self) -> list[BackupManifest]:
        """Complete backups, newest first."""
        return self._store.manifests()
