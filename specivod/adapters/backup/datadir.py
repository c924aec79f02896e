"""The data dir as one uncompressed POSIX (pax) tar, and putting it back.

The archive keeps modes, numeric owners, mtimes, symlinks, hard links and empty directories.
It is not compressed: the data dir holds uploads that are mostly compressed already (images,
PDFs, office files), and a single-threaded gzip would run at a fraction of disk speed and make
the backup — which an upgrade waits for — several times slower to save little space.

Restoring never deletes anything: the archive is extracted into a sibling directory, the current
data dir is renamed aside to ``<name>.replaced-<stamp>``, and the restored one renamed into place.
Siblings share the file system, so both renames are atomic.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from specivod.adapters.backup.files import (
    CHUNK,
    BytesDone,
    CountingReader,
    HashingWriter,
    create_private_file,
    fsync_directory,
    remove_tree,
)
from specivod.domain.errors import BackupError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchiveSummary:
    size: int
    sha256: str
    file_count: int
    """Regular files in the archive, each hard link counted as a file."""


def archive(source: Path, target: Path, written: BytesDone | None = None) -> ArchiveSummary:
    """Write the tree under ``source`` into the new file ``target`` (0600), fsynced."""
    if not source.is_dir():
        raise BackupError(f"the data dir {source} does not exist or is not a directory")
    file_count = 0

    def count(member: tarfile.TarInfo) -> tarfile.TarInfo:
        nonlocal file_count
        file_count += member.isreg() or member.islnk()
        return member

    with create_private_file(target) as stream:
        writer = HashingWriter(stream, written)
        try:
            # The writer has the write() a "w|" stream uses, not the typeshed's whole file API.
            with tarfile.open(  # type: ignore[call-overload]
                fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK
            ) as tar:
                tar.add(source, arcname=".", filter=count)
        except (OSError, tarfile.TarError) as error:
            raise BackupError(f"cannot archive the data dir {source}: {error}") from None
        stream.flush()
        os.fsync(stream.fileno())
    return ArchiveSummary(size=writer.size, sha256=writer.sha256, file_count=file_count)


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


def _free_sibling(path: Path, suffix: str) -> Path:
    candidate = path.with_name(path.name + suffix)
    attempt = 1
    while candidate.exists() or candidate.is_symlink():
        candidate = path.with_name(f"{path.name}{suffix}-{attempt}")
        attempt += 1
    return candidate


def check_restorable(data_dir: Path, archive_size: int) -> None:
    """Fail before anything changes when the data dir cannot be swapped or does not fit."""
    if data_dir.is_dir() and data_dir.is_mount():
        raise BackupError(
            f"the data dir {data_dir} is a mount point: it cannot be moved aside; restore "
            "its archive by hand or point the data dir variable at a directory inside the mount"
        )
    parent = data_dir.parent
    if not parent.is_dir():
        raise BackupError(f"cannot restore the data dir: {parent} does not exist")
    free = shutil.disk_usage(parent).free
    if free < archive_size:
        raise BackupError(
            f"not enough free space in {parent} to restore the data dir beside the current one: "
            f"{free} bytes free, {archive_size} needed"
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


def swap_into_place(staging: Path, data_dir: Path, stamp: str) -> Path | None:
    """Move the current data dir aside and the restored one into its place; where the old one
    went, or ``None`` when there was none."""
    aside = None
    if data_dir.exists() or data_dir.is_symlink():
        aside = _free_sibling(data_dir, f".replaced-{stamp}")
        data_dir.rename(aside)
    try:
        staging.rename(data_dir)
    except OSError as error:
        if aside is not None:
            aside.rename(data_dir)
        raise BackupError(f"cannot move the restored data dir into {data_dir}: {error}") from None
    fsync_directory(data_dir.parent)
    if aside is not None:
        log.info("the replaced data dir was moved to %s", aside)
    return aside
