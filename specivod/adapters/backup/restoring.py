"""Putting a verified backup back: the database, then the data dir swapped into place.

Rule: the data dir is replaced last and never deleted. Its archive is extracted into a hidden
sibling first, the database restored second (a failure there leaves the data dir untouched),
then the current data dir is renamed to ``data_aside`` and the restored copy into its place. Run
again with the same ``data_aside`` after an interruption, the restore finishes the same swap:
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
from specivod.adapters.backup.files import remove_tree
from specivod.adapters.backup.manifest import BackupManifest
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


async def restore_backup(
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
    datadir.check_restorable(data_dir, manifest.data_dir.size, manifest.id)
    staging = await asyncio.to_thread(
        datadir.extract_beside,
        directory / manifest.data_dir.file,
        data_dir,
        manifest.id,
        Meter(progress, "data dir extract", manifest.data_dir.size).add,
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
