"""Walking the live data dir into a new snapshot tree, one path at a time (see ``snapshot``).

Paths are plain strings relative to the data dir: a ``Path`` per file would cost more than the
system calls it wraps, and a data dir has 100,000 of them.
"""

# ruff: noqa: PTH102, PTH108, PTH115, PTH211

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from specivod.adapters.backup.copying import (
    Copier,
    child,
    link,
    listing,
    same_file_metadata,
    same_version,
    set_metadata,
)
from specivod.adapters.backup.files import BytesDone, sha256_of
from specivod.adapters.backup.snapshot_index import ROOT, Entry, entry_of, relinked
from specivod.adapters.backup.tarwalk import StatSeen

log = logging.getLogger(__name__)

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


Known = dict[str, tuple[int, int, int, str | None]]
"""Path → (size, mtime_ns, live inode, sha256) of the previous snapshot's files."""


class Walker:
    def __init__(
        self,
        source: Path,
        *,
        tree: Path,
        previous: str | None,
        known: Known,
        checksum: bool,
        done: BytesDone | None,
        seen: StatSeen | None,
    ) -> None:
        self._source = str(source)
        self._tree = str(tree)
        self._previous = previous
        self._known = known
        self._checksum = checksum
        self._done = done
        self._seen = seen
        self._copier = Copier()
        self._inodes: dict[tuple[int, int], Entry] = {}
        self.counts = Counts()

    def walk(self) -> Iterator[Entry]:
        """The entries in index order, each written into the tree before it is yielded;
        directories get their metadata once their contents are in."""
        status = os.lstat(self._source)
        stack = [(ROOT, iter(listing(self._source)), status)]
        self.counts.directories += 1
        yield entry_of(ROOT, "dir", status)
        while stack:
            parent, names, parent_status = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if parent != ROOT:
                    set_metadata(f"{self._tree}/{parent}", parent_status)
                continue
            path = child(parent, name)
            found = self._visit(path)
            if found is not None:
                entry, children, status = found
                yield entry
                if children is not None:
                    stack.append((path, iter(children), status))

    def _visit(self, path: str) -> tuple[Entry, list[str] | None, os.stat_result] | None:
        live = f"{self._source}/{path}"
        try:
            status = os.lstat(live)
            if self._seen is not None:
                self._seen(Path(live))
            mode = status.st_mode
            if stat.S_ISREG(mode):
                entry = self._file(path, live, status)
                return None if entry is None else (entry, None, status)
            if stat.S_ISDIR(mode):
                children = listing(live)
                os.mkdir(f"{self._tree}/{path}", 0o700)
                self.counts.directories += 1
                return entry_of(path, "dir", status), children, status
            if stat.S_ISLNK(mode):
                return self._symlink(path, live, status), None, status
        except GONE:
            self.counts.vanished += 1
            return None
        self.counts.skipped += 1
        log.warning("snapshot: skipping %s: not a file, directory or symlink", live)
        return None

    def _symlink(self, path: str, live: str, status: os.stat_result) -> Entry:
        target = os.readlink(live)
        copy = f"{self._tree}/{path}"
        os.symlink(target, copy)
        os.lchown(copy, status.st_uid, status.st_gid)
        os.utime(copy, ns=(status.st_atime_ns, status.st_mtime_ns), follow_symlinks=False)
        self.counts.symlinks += 1
        return entry_of(path, "symlink", status, target=target)

    def _file(self, path: str, live: str, status: os.stat_result) -> Entry | None:
        copy = f"{self._tree}/{path}"
        if status.st_nlink > 1:
            first = self._inodes.get((status.st_dev, status.st_ino))
            if first is not None and link(f"{self._tree}/{first.path}", copy):
                self._count_file(first.size)
                self.counts.hard_links += 1
                return relinked(first, path)
        entry = self._linked_from_previous(path, live, status, copy)
        if entry is None:
            entry = self._copied(path, live, copy)
        if entry is not None and status.st_nlink > 1:
            self._inodes[(status.st_dev, status.st_ino)] = entry
        return entry

    def _linked_from_previous(
        self, path: str, live: str, status: os.stat_result, copy: str
    ) -> Entry | None:
        known = self._known.get(path)
        if known is None or self._previous is None:
            return None
        size, mtime_ns, inode, sha256 = known
        if (size, mtime_ns, inode) != (status.st_size, status.st_mtime_ns, status.st_ino):
            return None
        earlier = f"{self._previous}/{path}"
        try:
            kept = os.lstat(earlier)
        except GONE:
            return None
        if not same_file_metadata(kept, status):
            return None  # chmod/chown since, or a damaged copy: the link would carry the old
        if self._checksum and _live_sha256(live) != sha256:
            return None
        if not link(earlier, copy):
            return None
        self._count_file(size)
        self.counts.files_linked += 1
        self.counts.bytes_linked += size
        return entry_of(path, "file", status, size=size, sha256=sha256)

    def _copied(self, path: str, live: str, copy: str) -> Entry | None:
        for attempt in range(1, ATTEMPTS + 1):
            if attempt > 1:
                os.unlink(copy)
            try:
                source = os.open(live, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as error:
                if isinstance(error, GONE) or error.errno == errno.ELOOP:
                    self.counts.vanished += 1  # gone, or replaced by a symlink since stat'ed
                    return None
                raise
            try:
                before = os.fstat(source)
                if not stat.S_ISREG(before.st_mode):
                    self.counts.vanished += 1
                    return None
                target = os.open(copy, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    copied = self._copier.copy(source, target, before, self._done)
                    after = os.fstat(source)
                    steady = copied.size == before.st_size and same_version(before, after)
                    if steady or attempt == ATTEMPTS:
                        set_metadata(target, before)
                finally:
                    os.close(target)
            finally:
                os.close(source)
            if steady or attempt == ATTEMPTS:
                break
        self.counts.changed += attempt > 1 or not steady
        if not steady:
            self.counts.flagged += 1
            self.counts.flagged_paths.append(path)
        self._count_file(copied.size)
        self.counts.files_copied += 1
        self.counts.bytes_copied += copied.size
        self.counts.reflinked += copied.reflinked
        return entry_of(path, "file", before, size=copied.size, sha256=copied.sha256)

    def _count_file(self, size: int) -> None:
        self.counts.files += 1
        self.counts.bytes_total += size


def _live_sha256(live: str) -> str | None:
    try:
        return sha256_of(Path(live))
    except OSError:
        return None
