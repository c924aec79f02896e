"""Incremental snapshots of the data dir: a directory tree that shares what did not change.

A file unchanged since the previous snapshot (same size, mtime, live inode and ctime; with
``checksum`` the same sha256 too) is a hard link to that snapshot's copy, so it costs no data
blocks; every other file is copied (a reflink where the file system allows). Every snapshot is
complete on its own: deleting any other one loses nothing of it. The live data dir is never hard-
linked (the app could modify a linked file in place), symlinks are recreated and never followed,
and hard links inside the data dir stay hard links. Modes, owners and mtimes are kept; the
snapshot's own root is 0700 (the data dir's own mode is in the index under ".").

The walk is the live tree while the app may run: a path that vanishes before it is read is skipped
and counted; a file that changes while copied is copied again, and after the last try kept as read
and flagged. Sockets, fifos and devices are skipped and logged.
"""

# ruff: noqa: PTH114, PTH115

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from specivod.adapters.backup.copying import child, same_file_metadata, sync_filesystem
from specivod.adapters.backup.files import BytesDone, remove_tree, sha256_of
from specivod.adapters.backup.snapshot_file import GONE
from specivod.adapters.backup.snapshot_index import (
    ROOT,
    Entry,
    Known,
    read_index,
    read_known,
    write_lines,
)
from specivod.adapters.backup.snapshot_pool import planned_workers, start_pool
from specivod.adapters.backup.snapshot_walk import Walker
from specivod.adapters.backup.tarwalk import StatSeen
from specivod.domain.errors import BackupError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Previous:
    """The newest earlier snapshot of the same data dir."""

    directory: Path
    index: Path


@dataclass(frozen=True)
class SnapshotSummary:
    files: int
    directories: int
    symlinks: int
    bytes_total: int
    """Logical bytes of the regular files (each hard link counted)."""
    files_copied: int
    bytes_copied: int
    files_linked: int
    """Hard links to the previous snapshot's copies."""
    bytes_linked: int
    reflinked: int
    vanished: int
    changed: int
    flagged: int
    skipped: int
    index_sha256: str
    hard_links: int = 0
    """Files that are hard links to another file of this snapshot, as in the data dir."""


def load_known(previous: Previous | None) -> Known:
    if previous is None:
        return {}
    try:
        return read_known(previous.index)
    except (OSError, ValueError) as error:
        raise BackupError(f"cannot read the previous snapshot's index: {error}") from None


def take_snapshot(
    source: Path,
    tree: Path,
    index: Path,
    previous: Previous | None,
    *,
    checksum: bool = False,
    done: BytesDone | None = None,
    seen: StatSeen | None = None,
    workers: int | None = None,
) -> SnapshotSummary:
    """Snapshot ``source`` into the new directory ``tree`` and write its ``index``.

    ``seen`` is called with each live path right after it was stat'ed, before it is read (the
    walk then takes no worker processes). ``workers``: how many (``snapshot_pool``); by default
    as many as pay against the previous snapshot's size."""
    if not source.is_dir():
        raise BackupError(f"the data dir {source} does not exist or is not a directory")
    if workers is None:
        workers = (
            0 if seen is not None else planned_workers(None if previous is None else previous.index)
        )
    try:
        tree.mkdir(mode=0o700)
    except OSError as error:
        raise BackupError(f"cannot create the snapshot {tree}: {error}") from None
    pool = None
    try:
        pool = start_pool(
            workers if previous is not None else 0,
            source=str(source),
            checksum=checksum,
            tree_device=tree.lstat().st_dev,
        )
        known = load_known(previous)
        walker = Walker(
            source,
            tree=tree,
            previous=None if previous is None else str(previous.directory),
            known=known,
            checksum=checksum,
            done=done,
            seen=seen,
            workers=pool,
        )
    except BaseException:
        if pool is not None:
            pool.close(kill=True)
        remove_tree(tree)
        raise
    try:
        tree.chmod(0o700)
        index_sha256, _ = write_lines(index, walker.walk())
        sync_filesystem(tree)
    except BaseException as error:
        walker.close()  # no copy may still be writing into the tree removed next
        remove_tree(tree)
        if isinstance(error, OSError):
            raise BackupError(f"cannot snapshot the data dir {source}: {error}") from None
        raise
    counts = walker.counts
    if counts.vanished or counts.changed or counts.skipped:
        log.warning(
            "snapshot of %s: %d paths vanished, %d files changed while copied "
            "(%d still changing, kept as read: %s), %d special files skipped",
            source,
            counts.vanished,
            counts.changed,
            counts.flagged,
            ", ".join(counts.flagged_paths[:20]) or "none",
            counts.skipped,
        )
    fields = {name: getattr(counts, name) for name in _SUMMED}
    return SnapshotSummary(index_sha256=index_sha256, **fields)


_SUMMED = [name for name in SnapshotSummary.__dataclass_fields__ if name != "index_sha256"]


@dataclass(frozen=True)
class SnapshotEstimate:
    files: int
    bytes_total: int
    files_to_copy: int
    bytes_to_copy: int
    metadata_bytes: int
    """The index and the snapshot's directories and names, estimated."""

    @property
    def bytes_needed(self) -> int:
        return self.bytes_to_copy + self.metadata_bytes


INDEX_BYTES_PER_ENTRY = 256
"""Generous: a compressed index entry and its directory slot together take well under this."""
DIRECTORY_BYTES = 4096


def estimate_snapshot(source: Path, previous: Previous | None) -> SnapshotEstimate:
    """What the next snapshot would copy, from a walk that stats and reads no file."""
    if not source.is_dir():
        raise BackupError(f"the data dir {source} does not exist or is not a directory")
    known = load_known(previous)
    earlier = None if previous is None else str(previous.directory)
    files = bytes_total = files_to_copy = bytes_to_copy = entries = directories = 0
    for directory, directory_names, names in os.walk(source):
        directories += 1
        entries += 1 + len(names)
        relative = os.path.relpath(directory, source)
        for name in names:
            path = child(relative, name)
            try:
                status = os.lstat(f"{directory}/{name}")
            except GONE:
                continue
            if not stat.S_ISREG(status.st_mode):
                continue
            files += 1
            bytes_total += status.st_size
            if not _unchanged(known.get(path), status, earlier, path):
                files_to_copy += 1
                bytes_to_copy += status.st_size
        entries += sum(os.path.islink(f"{directory}/{name}") for name in directory_names)
    metadata = entries * INDEX_BYTES_PER_ENTRY + directories * DIRECTORY_BYTES
    return SnapshotEstimate(files, bytes_total, files_to_copy, bytes_to_copy, metadata)


def _unchanged(
    known: tuple[int, int, int, int, str] | None,
    status: os.stat_result,
    earlier: str | None,
    path: str,
) -> bool:
    if known is None or earlier is None:
        return False
    if known[:4] != (status.st_size, status.st_mtime_ns, status.st_ino, status.st_ctime_ns):
        return False
    try:
        return same_file_metadata(os.lstat(f"{earlier}/{path}"), status)
    except GONE:
        return False


def check_snapshot(
    tree: Path,
    index: Path,
    index_sha256: str,
    *,
    read_files: bool,
    done: BytesDone | None = None,
) -> None:
    """``BackupError`` naming the first problem: the index's checksum, then each entry present
    with its kind and size (and its target for a symlink); with ``read_files``, each file's
    sha256 too."""
    try:
        actual = sha256_of(index)
    except OSError as error:
        raise BackupError(f"the snapshot index {index} cannot be read: {error}") from None
    if actual != index_sha256:
        raise BackupError(f"the snapshot index {index} does not match its checksum")
    try:
        for entry in read_index(index):
            _check_entry(tree, entry, read_files, done)
    except ValueError as error:
        raise BackupError(f"the snapshot index {index} is damaged: {error}") from None


def _check_entry(tree: Path, entry: Entry, read_files: bool, done: BytesDone | None) -> None:
    copy = tree if entry.path == ROOT else tree / entry.path
    try:
        status = copy.lstat()
    except OSError:
        raise BackupError(f"snapshot {tree}: {entry.path} is missing") from None
    expected = {"file": stat.S_ISREG, "dir": stat.S_ISDIR, "symlink": stat.S_ISLNK}[entry.kind]
    if not expected(status.st_mode):
        raise BackupError(f"snapshot {tree}: {entry.path} is not a {entry.kind}")
    if entry.kind == "symlink" and os.readlink(copy) != entry.target:
        raise BackupError(f"snapshot {tree}: the symlink {entry.path} has another target")
    if entry.kind != "file":
        return
    if status.st_size != entry.size:
        raise BackupError(
            f"snapshot {tree}: {entry.path} has {status.st_size} bytes, not {entry.size}"
        )
    if read_files and sha256_of(copy, done) != entry.sha256:
        raise BackupError(f"snapshot {tree}: {entry.path} does not match its sha256")
