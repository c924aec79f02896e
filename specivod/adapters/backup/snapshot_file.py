"""One regular file of a snapshot: a hard link to the previous snapshot's copy when the file is
unchanged, else a copy; shared by the walk (``snapshot_walk``) and its worker processes
(``snapshot_worker``).

Names are opened relative to open directory descriptors where the caller has them, so a
directory of the data dir swapped for a symlink meanwhile is never followed.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field, fields
from pathlib import Path

from specivod.adapters.backup.copying import (
    NO_LINK,
    Copier,
    same_file_metadata,
    same_version,
    set_metadata,
)
from specivod.adapters.backup.files import BytesDone, sha256_of
from specivod.adapters.backup.snapshot_index import Entry, KnownFile, entry_of, file_line

ATTEMPTS = 3
"""Copies of a file that keeps changing while it is copied, before it is kept as read."""
GONE = (FileNotFoundError, NotADirectoryError)


@dataclass
class Counts:
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    bytes_total: int = 0
    files_copied: int = 0
    bytes_copied: int = 0
    files_linked: int = 0
    bytes_linked: int = 0
    reflinked: int = 0
    vanished: int = 0
    changed: int = 0
    flagged: int = 0
    skipped: int = 0
    hard_links: int = 0
    flagged_paths: list[str] = field(default_factory=list)

    def add(self, other: Counts) -> None:
        for each in fields(self):
            if each.name != "flagged_paths":
                setattr(self, each.name, getattr(self, each.name) + getattr(other, each.name))
        self.flagged_paths.extend(other.flagged_paths)

    def count_file(self, size: int) -> None:
        self.files += 1
        self.bytes_total += size

    def count_copy(self, result: Copy) -> Entry | None:
        """Counts what a copy did; its entry (None: the file vanished)."""
        if result.entry is None:
            self.vanished += 1
            return None
        size = result.entry.size
        self.count_file(size)
        self.files_copied += 1
        self.bytes_copied += size
        self.reflinked += result.reflinked
        self.changed += result.changed
        if result.flagged:
            self.flagged += 1
            self.flagged_paths.append(result.entry.path)
        return result.entry


@dataclass(frozen=True, slots=True)
class Copy:
    """What a copy did."""

    entry: Entry | None
    changed: bool = False
    flagged: bool = False
    reflinked: bool = False


@dataclass(frozen=True, slots=True)
class Place:
    """Where a file is: its name in the data dir, in the new tree and in the previous snapshot,
    each relative to an open directory (``None``: the name is a whole path)."""

    live: str
    copy: str
    live_directory: int | None = None
    tree_directory: int | None = None


def copy_file(
    path: str,
    place: Place,
    copier: Copier,
    *,
    done: BytesDone | None,
    tree_device: int,
) -> Copy:
    """Copy the live file into the new tree with its metadata, again while it changes meanwhile
    (at most ``ATTEMPTS`` times, then kept as read and flagged)."""
    for attempt in range(1, ATTEMPTS + 1):
        if attempt > 1:
            os.unlink(place.copy, dir_fd=place.tree_directory)
        try:
            source = os.open(
                place.live,
                os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                dir_fd=place.live_directory,
            )
        except OSError as error:
            if isinstance(error, GONE) or error.errno == errno.ELOOP:
                return Copy(None)  # gone, or replaced by a symlink since stat'ed
            raise
        try:
            before = os.fstat(source)
            if not stat.S_ISREG(before.st_mode):
                return Copy(None)
            target = os.open(
                place.copy,
                os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                0o600,
                dir_fd=place.tree_directory,
            )
            try:
                copied = copier.copy(source, target, before, done, target_device=tree_device)
                after = os.fstat(source)
                steady = copied.size == before.st_size and same_version(before, after)
                if steady or attempt == ATTEMPTS:
                    set_metadata(target, before)
            finally:
                os.close(target)
        finally:
            os.close(source)
        if steady:
            break
    entry = entry_of(path, "file", before, size=copied.size, sha256=copied.sha256)
    return Copy(entry, attempt > 1 or not steady, not steady, copied.reflinked)


def link_from_previous(
    path: str,
    name: str,
    status: os.stat_result,
    known: KnownFile | None,
    directories: tuple[int, int, int | None],
    *,
    checksum_of: str | None,
    counts: Counts,
) -> Entry | bytes | None:
    """A hard link to the previous snapshot's copy if the file is unchanged: its index line, or
    its entry if the data dir has other links to it (they are linked to this one); None when it
    has to be copied. ``directories``: the live one, the new tree's and the previous snapshot's;
    ``checksum_of``: the live file's whole path, to compare its sha256 too."""
    _, tree, previous = directories
    if known is None or previous is None:
        return None
    size, mtime_ns, inode, ctime_ns, sha256 = known
    if (
        size != status.st_size
        or mtime_ns != status.st_mtime_ns
        or inode != status.st_ino
        or ctime_ns != status.st_ctime_ns
    ):
        return None  # ctime too: no program can set it back after writing in place
    try:
        kept = os.lstat(name, dir_fd=previous)
    except GONE:
        return None
    if not same_file_metadata(kept, status):
        return None  # chmod/chown since, or a damaged copy: the link would carry the old
    if checksum_of is not None and _live_sha256(checksum_of) != sha256:
        return None
    try:
        os.link(name, name, src_dir_fd=previous, dst_dir_fd=tree, follow_symlinks=False)
    except OSError as error:
        if error.errno in NO_LINK:
            return None
        raise
    counts.files += 1
    counts.bytes_total += size
    counts.files_linked += 1
    counts.bytes_linked += size
    mode = stat.S_IMODE(status.st_mode)
    if status.st_nlink == 1:
        return file_line(path, mode, status.st_uid, status.st_gid, known)
    return Entry(
        path,
        "file",
        mode,
        status.st_uid,
        status.st_gid,
        mtime_ns,
        size,
        sha256,
        None,
        inode,
        ctime_ns,
    )


def _live_sha256(live: str) -> str | None:
    try:
        return sha256_of(Path(live))
    except OSError:
        return None
