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
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
COPY_THREADS = 3
WINDOW = 256
"""Files copied or queued ahead of the index writer, at most."""


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


@dataclass(frozen=True, slots=True)
class _Copy:
    """What a copy job did; counted by the walk, in index order."""

    entry: Entry | None
    changed: bool = False
    flagged: bool = False
    reflinked: bool = False


Pending = Entry | Future[_Copy]


class Walker:
    """Walks the live tree in index order. File copies run on a few threads (reading, hashing
    and writing release the GIL, so one file's hashing overlaps another's I/O); everything else,
    and all counting, happens on the walking thread. ``done`` may be called from those threads,
    one call at a time."""

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
        self._done = None if done is None else _serialized(done)
        self._seen = seen
        self._copiers = threading.local()
        self._pool = ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="snapshot-copy")
        self._inodes: dict[tuple[int, int], Pending] = {}
        self._directories: list[tuple[str, os.stat_result]] = []
        self.counts = Counts()

    def walk(self) -> Iterator[Entry]:
        """The entries in index order, each in the tree before it is yielded; directories get
        their metadata at the end, once nothing more is written into them."""
        try:
            yield from self._walk()
            for path, status in reversed(self._directories):
                set_metadata(path, status)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _walk(self) -> Iterator[Entry]:
        status = os.lstat(self._source)
        stack = [(ROOT, iter(listing(self._source)))]
        self.counts.directories += 1
        yield entry_of(ROOT, "dir", status)
        pending: deque[Pending] = deque()
        while stack:
            parent, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                continue
            path = child(parent, name)
            found = self._visit(path)
            if found is not None:
                item, children = found
                pending.append(item)
                if children is not None:
                    stack.append((path, iter(children)))
            while pending and (len(pending) > WINDOW or _ready(pending[0])):
                if (entry := self._settle(pending.popleft())) is not None:
                    yield entry
        while pending:
            if (entry := self._settle(pending.popleft())) is not None:
                yield entry

    def _settle(self, item: Pending) -> Entry | None:
        if isinstance(item, Entry):
            return item
        result = item.result()
        if result.entry is None:
            self.counts.vanished += 1
            return None
        size = result.entry.size
        self._count_file(size)
        self.counts.files_copied += 1
        self.counts.bytes_copied += size
        self.counts.reflinked += result.reflinked
        self.counts.changed += result.changed
        if result.flagged:
            self.counts.flagged += 1
            self.counts.flagged_paths.append(result.entry.path)
        return result.entry

    def _visit(self, path: str) -> tuple[Pending, list[str] | None] | None:
        live = f"{self._source}/{path}"
        try:
            status = os.lstat(live)
            if self._seen is not None:
                self._seen(Path(live))
            mode = status.st_mode
            if stat.S_ISREG(mode):
                return self._file(path, live, status), None
            if stat.S_ISDIR(mode):
                children = listing(live)
                copy = f"{self._tree}/{path}"
                os.mkdir(copy, 0o700)
                self._directories.append((copy, status))
                self.counts.directories += 1
                return entry_of(path, "dir", status), children
            if stat.S_ISLNK(mode):
                return self._symlink(path, live, status), None
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

    def _file(self, path: str, live: str, status: os.stat_result) -> Pending:
        copy = f"{self._tree}/{path}"
        key = (status.st_dev, status.st_ino)
        if status.st_nlink > 1 and key in self._inodes:
            earlier = self._inodes[key]
            first = earlier if isinstance(earlier, Entry) else earlier.result().entry
            if first is not None and link(f"{self._tree}/{first.path}", copy):
                self._count_file(first.size)
                self.counts.hard_links += 1
                return relinked(first, path)
        item: Pending | None = self._linked_from_previous(path, live, status, copy)
        if item is None:
            item = self._pool.submit(self._copied, path, live, copy)
        if status.st_nlink > 1:
            self._inodes[key] = item
        return item

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

    def _copied(self, path: str, live: str, copy: str) -> _Copy:
        copier: Copier | None = getattr(self._copiers, "copier", None)
        if copier is None:
            copier = self._copiers.copier = Copier()
        for attempt in range(1, ATTEMPTS + 1):
            if attempt > 1:
                os.unlink(copy)
            try:
                source = os.open(live, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as error:
                if isinstance(error, GONE) or error.errno == errno.ELOOP:
                    return _Copy(None)  # gone, or replaced by a symlink since stat'ed
                raise
            try:
                before = os.fstat(source)
                if not stat.S_ISREG(before.st_mode):
                    return _Copy(None)
                target = os.open(copy, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    copied = copier.copy(source, target, before, self._done)
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
        return _Copy(entry, attempt > 1 or not steady, not steady, copied.reflinked)

    def _count_file(self, size: int) -> None:
        self.counts.files += 1
        self.counts.bytes_total += size


def _ready(item: Pending) -> bool:
    return isinstance(item, Entry) or item.done()


def _serialized(done: BytesDone) -> BytesDone:
    lock = threading.Lock()

    def report(amount: int) -> None:
        with lock:
            done(amount)

    return report


def _live_sha256(live: str) -> str | None:
    try:
        return sha256_of(Path(live))
    except OSError:
        return None
