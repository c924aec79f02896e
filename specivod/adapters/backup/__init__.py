"""Backups of a Specivo deployment: a PostgreSQL dump streamed from the database service, an
archive of the data dir, a manifest, retention, restore, and the schema fingerprint.

Rule: a backup is listed, counted and restorable only once it is complete — every file fsynced,
checksummed and the dump validated — and a failure at any point leaves no backup behind, only a
``BackupError``. Nothing here ever deletes a data dir: a restore moves the current one aside.
Callers hold the host lock (``specivod.engine.lock.host_lock``); restore expects the app services
to be stopped already.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from pathlib import Path

from specivod.adapters.backup import datadir
from specivod.adapters.backup.files import sha256_of, tree_size
from specivod.adapters.backup.manifest import (
    BackupManifest,
    DatabaseDump,
    DataDirArchive,
    Durations,
    check_files,
    write_manifest,
)
from specivod.adapters.backup.postgres import PostgresDatabase
from specivod.adapters.backup.progress import Meter, Progress
from specivod.adapters.backup.restoring import RestoreResult, restore_backup
from specivod.adapters.backup.runner import ComposeRunner
from specivod.adapters.backup.store import (
    BackupStore,
    expected_size,
    format_id,
    require_free_space,
    select_expired,
)
from specivod.adapters.clock import Clock, SystemClock
from specivod.domain.errors import BackupError
from specivod.settings import BackupSettings, Settings

__all__ = ["BackupManifest", "Backups", "Progress", "RestoreResult", "backups_in"]

log = logging.getLogger(__name__)

DUMP_NAME = "database.dump"
ARCHIVE_NAME = "data.tar"


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

    async def create(
        self,
        *,
        version: str | None,
        reason: str,
        progress: Progress | None = None,
        protect: Collection[str] = (),
    ) -> BackupManifest:
        """A new valid backup, then retention (keeping this one and ``protect``)."""
        try:
            return await self._create(version, reason, progress, protect)
        except OSError as error:
            raise BackupError(f"backup failed: {error}") from None

    async def _create(
        self,
        version: str | None,
        reason: str,
        progress: Progress | None,
        protect: Collection[str],
    ) -> BackupManifest:
        self._store.ensure()
        self._store.remove_leftovers()
        data_dir = self._data_dir()
        if not data_dir.is_dir():
            raise BackupError(f"the data dir {data_dir} does not exist or is not a directory")
        await self._require_space(data_dir)
        created_at = self._clock.now()
        backup_id = self._store.new_id(created_at)
        work = self._store.start(backup_id)
        log.info("backing up the database and %s into %s", data_dir, self.path(backup_id))
        try:
            database, database_seconds, fingerprint = await self._dump(work, progress)
            archive, data_dir_seconds = await self._archive(data_dir, work, progress)
            manifest = BackupManifest(
                id=backup_id,
                created_at=created_at,
                version=version,
                reason=reason,
                database=database,
                data_dir=archive,
                fingerprint=fingerprint,
                durations=Durations(
                    database_seconds=round(database_seconds, 3),
                    data_dir_seconds=round(data_dir_seconds, 3),
                    total_seconds=round(database_seconds + data_dir_seconds, 3),
                ),
                valid=True,
            )
            write_manifest(work, manifest)
            self._store.complete(backup_id)
        except BaseException:
            self._store.discard(backup_id)
            raise
        self.prune(self._settings.keep, {backup_id, *protect})
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

    async def _archive(
        self, data_dir: Path, work: Path, progress: Progress | None
    ) -> tuple[DataDirArchive, float]:
        started = self._clock.monotonic()
        total = await asyncio.to_thread(tree_size, data_dir) if progress else None
        summary = await asyncio.to_thread(
            datadir.archive,
            data_dir,
            work / ARCHIVE_NAME,
            Meter(progress, "data dir archive", total).add,
        )
        record = DataDirArchive(
            str(data_dir),
            ARCHIVE_NAME,
            summary.size,
            summary.sha256,
            summary.file_count,
            vanished_while_archived=summary.vanished,
            changed_while_archived=summary.changed,
        )
        return record, self._clock.monotonic() - started

    async def _require_space(self, data_dir: Path) -> None:
        expected = expected_size(self.list())
        if expected is None:
            database = await self._database.size()
            expected = database + await asyncio.to_thread(tree_size, data_dir)
        require_free_space(
            self._store.free_bytes(), expected, int(self._settings.min_free_bytes), self.directory
        )

    def _data_dir(self) -> Path:
        data_dir = self._deployment.data_dir()
        if data_dir is None:
            raise BackupError("the deployment's env file names no data dir to back up")
        return data_dir.resolve()

    def prune(self, keep: int, protected_ids: Collection[str] = ()) -> list[str]:
        """Delete all but the newest ``keep`` valid backups, never a protected one."""
        deleted = []
        for backup_id in select_expired(self.list(), keep, protected_ids):
            try:
                self._store.delete(backup_id)
            except OSError as error:
                log.warning("cannot delete old backup %s: %s", backup_id, error)
            else:
                deleted.append(backup_id)
        return deleted

    async def verify(self, backup_id: str, progress: Progress | None = None) -> BackupManifest:
        """The manifest, once both files are checked against their size and sha256."""
        manifest = self.get(backup_id)
        if not manifest.valid:
            raise BackupError(f"backup {backup_id} is marked invalid")
        meter = Meter(progress, "verify", manifest.size)
        await asyncio.to_thread(check_files, self.path(backup_id), manifest, meter.add)
        return manifest

    def version_of(self, backup_id: str) -> str | None:
        """The version deployed when the backup was taken."""
        return self.get(backup_id).version

    def data_aside_path(self, label: str) -> Path:
        """Where a restore given this label (a transaction's, such as ``tx42``) moves the
        current data dir: ``<data dir>.replaced-<label>`` beside it, or with ``-1``, ``-2``...
        appended when that exists already (left by another journal's transaction of the same
        number): the caller journals the path before the restore acts, so an existing one is
        never ours. Creates nothing."""
        if not label or "/" in label or label in (".", ".."):
            raise BackupError(f"{label!r} cannot name the replaced data dir")
        data_dir = self._data_dir()
        return datadir.free_sibling(data_dir, f".replaced-{label}")

    async def prepare_restore(
        self, backup_id: str, progress: Progress | None = None
    ) -> BackupManifest:
        """Every check a restore can make before it changes anything: the backup is valid, its
        files match their checksums, and the data dir can be swapped beside the current one."""
        manifest = await self.verify(backup_id, progress)
        datadir.check_restorable(self._data_dir(), manifest.data_dir.size, backup_id)
        return manifest

    async def restore(
        self,
        backup_id: str,
        progress: Progress | None = None,
        *,
        verify: bool = True,
        data_aside: Path | None = None,
    ) -> RestoreResult:
        """Restore the database and the data dir (the app services must be stopped); the
        checksums are verified first unless the caller has just done so.

        The current data dir is moved to ``data_aside`` (see ``data_aside_path``), or to a new
        ``.replaced-<stamp>`` sibling when it is ``None``. Given the same ``data_aside`` again
        after an interruption, the restore finishes what the first attempt began: when the
        data dir is already aside, the copy is extracted again and moved into place; when the
        swap was done, the data dir is the restored copy and stays. The database is restored
        again in every case (the restore replaces it whole)."""
        try:
            return await self._restore(backup_id, progress, verify, data_aside)
        except OSError as error:
            raise BackupError(f"restore of {backup_id} failed: {error}") from None

    async def _restore(
        self, backup_id: str, progress: Progress | None, verify: bool, data_aside: Path | None
    ) -> RestoreResult:
        started = self._clock.monotonic()
        manifest = await self.verify(backup_id, progress) if verify else self.get(backup_id)
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
        aside = await restore_backup(
            manifest,
            self.path(backup_id),
            data_dir=data_dir,
            database=self._database,
            data_aside=data_aside,
            default_aside=lambda: datadir.free_sibling(
                data_dir, f".replaced-{format_id(self._clock.now())}"
            ),
            progress=progress,
        )
        return RestoreResult(manifest, data_dir, aside, self._clock.monotonic() - started)

    # Last in the class: a method named ``list`` hides the builtin from the annotations below it.
    def list(self) -> list[BackupManifest]:
        """Complete backups, newest first."""
        return self._store.manifests()
