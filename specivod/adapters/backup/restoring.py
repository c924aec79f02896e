"""Putting a verified backup back: the database, then the data dir.

Rule: the data dir is restored last and nothing of it is ever deleted. A snapshot backup changes
only the files that differ and keeps what it replaces or removes in a set-aside tree (see
``datasync``). A backup holding a tar archive (taken before snapshots) is extracted into a hidden
sibling first, the database restored second (a failure there leaves the data dir untouched), then
the current data dir is renamed to ``data_aside`` and the restored copy into its place. Run again
with the same ``data_aside`` after an interruption, the restore finishes the same swap:
``data_aside`` present and the data dir missing means it was killed between the two renames
(extract again, rename into place); both present means the swap was done (the data dir is the
restored copy and stays). The database is restored again in every case: the restore replaces it
whole, so doing it twice is the same as doing it once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from specivod.adapters.backup import datadir
from specivod.adapters.backup.datasync import check_sources, plan_sync, sync_from_snapshot
from specivod.adapters.backup.files import remove_tree
from specivod.adapters.backup.manifest import BackupManifest, DataDirArchive, DataDirSnapshot
from specivod.adapters.backup.postgres import PostgresDatabase
from specivod.adapters.backup.progress import Meter, Progress
from specivod.domain.errors import BackupError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreResult:
    backup: BackupManifest
    data_dir: Path
    data_aside: Path | None
    """Where the replaced data dir was moved, or ``None`` when there was none."""
    seconds: float

    @property
    def id(self) -> str:
        return self.backup.id


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


async def restore_archive(
    manifest: BackupManifest,
    directory: Path,
    *,
    data_dir: Path,
    database: PostgresDatabase,
    data_aside: Path | None,
    default_aside: Callable[[], Path],
    progress: Progress | None,
) -> Path | None:
    """Restore the backup in ``directory`` (its checksums already verified); where the
    replaced data dir is. ``default_aside`` names it when ``data_aside`` is ``None``."""
    archive = manifest.data_dir
    if not isinstance(archive, DataDirArchive):
        raise BackupError(f"backup {manifest.id} holds no archive of the data dir")
    if data_aside is not None and data_aside.parent != data_dir.parent:
        raise BackupError(f"{data_aside} is not beside the data dir {data_dir}")
    dump = directory / manifest.database.file
    database_meter = Meter(progress, "database restore", manifest.database.size)
    relations = manifest.database.relations
    already_aside = data_aside is not None and _exists(data_aside)
    if already_aside and _exists(data_dir):
        log.info("the data dir was restored already (%s holds the one it replaced)", data_aside)
        await database.restore(dump, database_meter.at, relations)
        return data_aside
    datadir.check_restorable(data_dir, archive.size, manifest.id)
    staging = await asyncio.to_thread(
        datadir.extract_beside,
        directory / archive.file,
        data_dir,
        manifest.id,
        Meter(progress, "data dir extract", archive.size).add,
    )
    try:
        await database.restore(dump, database_meter.at, relations)
    except BackupError as error:
        remove_tree(staging)
        raise BackupError(f"{error}\nThe data dir was not touched.") from None
    except BaseException:
        remove_tree(staging)
        raise
    try:
        moved = datadir.swap_into_place(staging, data_dir, data_aside or default_aside())
    except BackupError as error:
        raise BackupError(
            f"the database was restored, but the data dir was not: {error}; the restored "
            f"files are in {staging}"
        ) from None
    return data_aside if already_aside else moved


async def restore_snapshot(
    manifest: BackupManifest,
    directory: Path,
    *,
    data_dir: Path,
    database: PostgresDatabase,
    replaced: Path,
    checksum: bool,
    progress: Progress | None,
) -> Path | None:
    """Restore a snapshot backup (its dump checksum and snapshot files already checked): the
    database, then only the data dir's files that differ from the snapshot; what is replaced
    or removed goes to ``replaced``, which is returned when anything went there. Run again after
    an interruption, it finishes the same restore: the database is restored again and the files
    still differing are copied."""
    snapshot = manifest.data_dir
    if not isinstance(snapshot, DataDirSnapshot):
        raise BackupError(f"backup {manifest.id} holds no snapshot of the data dir")
    if replaced.parent != data_dir.parent:
        raise BackupError(f"{replaced} is not beside the data dir {data_dir}")
    tree, index = directory / snapshot.tree, directory / snapshot.index
    plan = await asyncio.to_thread(plan_sync, tree, index, data_dir, checksum=checksum)
    datadir.check_sync_room(data_dir, plan)
    await asyncio.to_thread(
        check_sources,
        tree,
        index,
        data_dir,
        checksum=checksum,
        done=Meter(progress, "verify", plan.bytes_to_copy).add,
    )
    log.info(
        "restoring backup %s: the database, then %d files (%d bytes) of the data dir that differ; "
        "%d paths the backup lacks go to %s",
        manifest.id,
        plan.files_to_copy,
        plan.bytes_to_copy,
        plan.paths_to_set_aside,
        replaced,
    )
    try:
        await database.restore(
            directory / manifest.database.file,
            Meter(progress, "database restore", manifest.database.size).at,
            manifest.database.relations,
        )
    except BackupError as error:
        raise BackupError(f"{error}\nThe data dir was not touched.") from None
    try:
        summary = await asyncio.to_thread(
            sync_from_snapshot,
            tree,
            index,
            data_dir,
            replaced,
            checksum=checksum,
            done=Meter(progress, "data dir restore", plan.bytes_to_copy).add,
        )
    except BackupError as error:
        raise BackupError(
            f"the database was restored, but the data dir only in part: {error}; run "
            f"`specivod recover` to finish it (what was replaced so far is in {replaced})"
        ) from None
    log.info(
        "data dir restored: %d files copied (%d bytes), %d set aside in %s, %d unchanged",
        summary.copied,
        summary.bytes_copied,
        summary.set_aside,
        replaced,
        summary.unchanged,
    )
    return replaced if _exists(replaced) else None
