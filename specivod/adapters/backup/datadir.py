"""The data dir as one uncompressed POSIX (pax) tar, and putting it back.

The archive keeps modes, numeric owners, mtimes, symlinks, hard links and empty directories.
It is not compressed: the data dir holds uploads that are mostly compressed already (images,
PDFs, office files), and a single-threaded gzip would run at a fraction of disk speed and make
the backup — which an upgrade waits for — several times slower to save little space.

Restoring never deletes anything: the archive is extracted into a sibling directory, the current
data dir is renamed aside to ``<name>.replaced-<label>`` (a name the caller may choose and
journal beforehand), and the restored one renamed into place. Siblings share the file system, so
both renames are atomic.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from specivod.adapters.backup.datasync import SyncPlan
from specivod.adapters.backup.files import (
    CHUNK,
    BytesDone,
    CountingReader,
    HashingWriter,
    create_private_file,
    fsync_directory,
    remove_tree,
)
from specivod.adapters.backup.tarwalk import StatSeen, add_tree
from specivod.domain.errors import BackupError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchiveSummary:
    size: int
    sha256: str
    file_count: int
    """Regular files in the archive, each hard link counted as a file."""
    vanished: int = 0
    """Files and directories that vanished before they could be read, skipped."""
    changed: int = 0
    """Files that changed size or content while they were read."""


def archive(
    source: Path,
    target: Path,
    written: BytesDone | None = None,
    *,
    stat_seen: StatSeen | None = None,
) -> ArchiveSummary:
    """Write the tree under ``source`` into the new file ``target`` (0600), fsynced. Files that
    vanish or change meanwhile do not fail it (see ``tarwalk``); they are counted and logged."""
    if not source.is_dir():
        raise BackupError(f"the data dir {source} does not exist or is not a directory")
    with create_private_file(target) as stream:
        writer = HashingWriter(stream, written)
        try:
            # The writer has the write() a "w|" stream uses, not the typeshed's whole file API.
            with tarfile.open(  # type: ignore[call-overload]
                fileobj=writer,
                mode="w|",
                format=tarfile.PAX_FORMAT,
                bufsize=CHUNK,
                copybufsize=CHUNK,
            ) as tar:
                counts = add_tree(tar, source, stat_seen)
        except (OSError, tarfile.TarError) as error:
            raise BackupError(f"cannot archive the data dir {source}: {error}") from None
        stream.flush()
        os.fsync(stream.fileno())
    if counts.vanished or counts.changed:
        log.warning(
            "archiving the data dir %s: %d files or directories vanished and were skipped, "
            "%d changed while they were read",
            source,
            counts.vanished,
            counts.changed,
        )
    return ArchiveSummary(writer.size, writer.sha256, counts.files, counts.vanished, counts.changed)


def _own_archive_member(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
    """Keep every attribute (the archive is ours, its checksum verified) but refuse a name that
    would land outside the destination."""
    names = [member.name] + ([member.linkname] if member.islnk() else [])
    for name in names:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts:
            raise BackupError(f"refusing archive member {name!r}: outside the data dir")
    return member


def extract(source: Path, destination: Path, read: BytesDone | None = None) -> None:
    """Extract the archive into the new directory ``destination``."""
    destination.mkdir(mode=0o700)
    with source.open("rb") as raw:
        stream = CountingReader(raw, read) if read is not None else raw
        try:
            with tarfile.open(  # type: ignore[call-overload]
                fileobj=stream, mode="r|", bufsize=CHUNK
            ) as tar:
                # The filter refuses names outside the destination.
                tar.extractall(  # noqa: S202
                    destination, numeric_owner=True, filter=_own_archive_member
                )
        except (OSError, tarfile.TarError) as error:
            raise BackupError(f"cannot extract {source}: {error}") from None


def free_sibling(path: Path, suffix: str) -> Path:
    """``<path><suffix>``, or with ``-1``, ``-2``... appended when that name is taken."""
    candidate = path.with_name(path.name + suffix)
    attempt = 1
    while candidate.exists() or candidate.is_symlink():
        candidate = path.with_name(f"{path.name}{suffix}-{attempt}")
        attempt += 1
    return candidate


def _disk_free(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def _bytes_in(root: Path) -> int:
    """Bytes of the regular files under ``root``, each inode once (hard links share space)."""
    inodes: dict[tuple[int, int], int] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                status = os.lstat(os.path.join(directory, name))  # noqa: PTH118
                if stat.S_ISREG(status.st_mode):
                    inodes[(status.st_dev, status.st_ino)] = status.st_size
    return sum(inodes.values())


def check_restorable(
    data_dir: Path,
    archive_size: int,
    backup_id: str,
    disk_free: Callable[[Path], int] = _disk_free,
) -> None:
    """Fail before anything changes when the data dir cannot be swapped or does not fit. The
    staging copy an interrupted restore of the same backup left counts as free: it is removed
    before the archive is extracted again."""
    if data_dir.is_dir() and data_dir.is_mount():
        raise BackupError(
            f"the data dir {data_dir} is a mount point: it cannot be moved aside; restore "
            "its archive by hand or point the data dir variable at a directory inside the mount"
        )
    parent = data_dir.parent
    if not parent.is_dir():
        raise BackupError(f"cannot restore the data dir: {parent} does not exist")
    free = disk_free(parent)
    staging = staging_path(data_dir, backup_id)
    reclaimable = _bytes_in(staging) if staging.is_dir() else 0
    if free + reclaimable < archive_size:
        leftover = f" (and {reclaimable} in {staging}, removed first)" if reclaimable else ""
        raise BackupError(
            f"not enough free space in {parent} to restore the data dir beside the current one: "
            f"{free} bytes free{leftover}, {archive_size} needed"
        )


def check_room(
    data_dir: Path,
    needed: int,
    disk_free: Callable[[Path], int] = _disk_free,
    *,
    what: str = "the files that differ from the backup",
) -> None:
    """Fail before anything changes when the file system of ``data_dir`` (or of its nearest
    existing parent) has less than ``needed`` bytes free."""
    existing = data_dir
    while not existing.exists():
        existing = existing.parent
    free = disk_free(existing)
    if free < needed:
        raise BackupError(
            f"not enough free space in {existing} to restore the data dir: {free} bytes free, "
            f"{needed} needed for {what}"
        )


def check_sync_room(data_dir: Path, plan: SyncPlan) -> None:
    """Room for the files a restore copies into the data dir and, when the data dir is a mount
    point, for what it sets aside beside it (a copy onto the parent's file system)."""
    check_room(data_dir, plan.bytes_to_copy)
    if plan.bytes_set_aside_elsewhere:
        check_room(
            data_dir.parent,
            plan.bytes_set_aside_elsewhere,
            what="what the restore sets aside beside the data dir, a mount point",
        )


def staging_path(data_dir: Path, backup_id: str) -> Path:
    return data_dir.with_name(f".{data_dir.name}.restoring-{backup_id}")


def extract_beside(source: Path, data_dir: Path, backup_id: str, read: BytesDone | None) -> Path:
    """Extract into a hidden sibling of ``data_dir``; a leftover of a killed restore goes first."""
    staging = staging_path(data_dir, backup_id)
    remove_tree(staging)
    try:
        extract(source, staging, read)
    except BaseException:
        remove_tree(staging)
        raise
    return staging


def swap_into_place(staging: Path, data_dir: Path, aside: Path) -> Path | None:
    """Move the current data dir to ``aside`` (a free name) and the restored one into its
    place; ``aside``, or ``None`` when there was no data dir to move."""
    moved = None
    if data_dir.exists() or data_dir.is_symlink():
        data_dir.rename(aside)
        moved = aside
    try:
        staging.rename(data_dir)
    except OSError as error:
        if moved is not None:
            moved.rename(data_dir)
        raise BackupError(f"cannot move the restored data dir into {data_dir}: {error}") from None
    fsync_directory(data_dir.parent)
    if moved is not None:
        log.info("the replaced data dir was moved to %s", moved)
    return moved
