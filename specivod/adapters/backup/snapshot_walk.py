"""Walking the live data dir into a new snapshot tree, one path at a time (see ``snapshot``).

Paths are plain strings relative to the data dir: a ``Path`` per file would cost more than the
system calls it wraps, and a data dir has 100,000 of them.
"""

# ruff: noqa: PTH108, PTH208

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
    NO_LINK,
    Copier,
    child,
    link,
    same_file_metadata,
    same_version,
    set_metadata,
)
from specivod.adapters.backup.files import BytesDone, sha256_of
from specivod.adapters.backup.snapshot_index import (
    ROOT,
    Entry,
    Known,
    encoded,
    entry_of,
    file_line,
    relinked,
)
from specivod.adapters.backup.tarwalk import StatSeen

log = logging.getLogger(__name__)

ATTEMPTS = 3
"""Copies of a file that keeps changing while it is copied, before it is kept as read."""
GONE = (FileNotFoundError, NotADirectoryError)
COPY_THREADS = 4
"""Reads of a cold cache overlap: 4 beat 3 and 2 (2 cores), at the price of more GIL turns."""
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


@dataclass(frozen=True, slots=True)
class _Copy:
    """What a copy job did; counted by the walk, in index order."""

    entry: Entry | None
    changed: bool = False
    flagged: bool = False
    reflinked: bool = False


Pending = Entry | bytes | Future[_Copy]
"""In index order: an entry, a line already encoded, or a copy under way."""


@dataclass(frozen=True, slots=True)
class _Directories:
    """Open descriptors of one directory: in the data dir, the new tree and the previous one.
    Names are looked up relative to them: a path walk per file would cost more."""

    live: int
    tree: int
    previous: int | None

    def close(self) -> None:
        for descriptor in (self.live, self.tree, self.previous):
            if descriptor is not None:
                os.close(descriptor)


def _open_directory(name: str, parent: int | None = None) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(name, flags, dir_fd=parent)


def _open_if_there(name: str, parent: int | None = None) -> int | None:
    """The directory of the previous snapshot, if it has one by that name."""
    try:
        return _open_directory(name, parent)
    except OSError as error:
        if isinstance(error, GONE) or error.errno in {errno.ELOOP, errno.ENOTDIR}:
            return None
        raise


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
        self._inodes: dict[tuple[int, int], Entry | Future[_Copy]] = {}
        self._tree_device = os.lstat(self._tree).st_dev
        self._directories: list[tuple[str, os.stat_result]] = []
        self.counts = Counts()

    def walk(self) -> Iterator[bytes]:
        """The index lines in index order, each path in the tree before its line is yielded;
        directories get their metadata at the end, once nothing more is written into them."""
        try:
            yield from self._walk()
            for path, status in reversed(self._directories):
                set_metadata(path, status)
        finally:
            self.close()

    def close(self) -> None:
        """Wait for the copies under way; drop those not started."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _walk(self) -> Iterator[bytes]:
        status = os.lstat(self._source)
        self.counts.directories += 1
        yield encoded(entry_of(ROOT, "dir", status))
        root = _Directories(
            _open_directory(self._source),
            _open_directory(self._tree),
            None if self._previous is None else _open_if_there(self._previous),
        )
        stack = [(ROOT, iter(sorted(os.listdir(root.live))), root)]
        pending: deque[Pending] = deque()
        try:
            while stack:
                parent, names, directories = stack[-1]
                name = next(names, None)
                if name is None:
                    stack.pop()[2].close()
                    continue
                path = child(parent, name)
                found = self._visit(path, name, directories)
                if found is not None:
                    item, children = found
                    if children is not None:
                        listed, opened = children
                        stack.append((path, iter(listed), opened))
                    if not pending and type(item) is bytes:
                        yield item  # a file linked from the previous snapshot, nothing before it
                        continue
                    pending.append(item)
                while pending and (len(pending) > WINDOW or _ready(pending[0])):
                    if (line := self._settle(pending.popleft())) is not None:
                        yield line
            while pending:
                if (line := self._settle(pending.popleft())) is not None:
                    yield line
        finally:
            for _, _, directories in stack:
                directories.close()

    def _settle(self, item: Pending) -> bytes | None:
        if isinstance(item, bytes):
            return item
        if isinstance(item, Entry):
            return encoded(item)
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
        return encoded(result.entry)

    def _visit(
        self, path: str, name: str, directories: _Directories
    ) -> tuple[Pending, tuple[list[str], _Directories] | None] | None:
        try:
            status = os.lstat(name, dir_fd=directories.live)
            if self._seen is not None:
                self._seen(Path(f"{self._source}/{path}"))
            mode = status.st_mode
            if stat.S_ISREG(mode):
                return self._file(path, name, status, directories), None
            if stat.S_ISDIR(mode):
                return self._directory(path, name, status, directories)
            if stat.S_ISLNK(mode):
                return self._symlink(path, name, status, directories), None
        except GONE:
            self.counts.vanished += 1
            return None
        self.counts.skipped += 1
        log.warning(
            "snapshot: skipping %s/%s: not a file, directory or symlink", self._source, path
        )
        return None

    def _directory(
        self, path: str, name: str, status: os.stat_result, directories: _Directories
    ) -> tuple[Entry, tuple[list[str], _Directories]]:
        live = _open_directory(name, directories.live)
        try:
            children = sorted(os.listdir(live))
            os.mkdir(name, 0o700, dir_fd=directories.tree)
            copy = _open_directory(name, directories.tree)
        except BaseException:
            os.close(live)
            raise
        earlier = None
        if directories.previous is not None:
            earlier = _open_if_there(name, directories.previous)
        self._directories.append((f"{self._tree}/{path}", status))
        self.counts.directories += 1
        return entry_of(path, "dir", status), (children, _Directories(live, copy, earlier))

    def _symlink(
        self, path: str, name: str, status: os.stat_result, directories: _Directories
    ) -> Entry:
        target = os.readlink(name, dir_fd=directories.live)
        os.symlink(target, name, dir_fd=directories.tree)
        os.chown(name, status.st_uid, status.st_gid, dir_fd=directories.tree, follow_symlinks=False)
        times = (status.st_atime_ns, status.st_mtime_ns)
        os.utime(name, ns=times, dir_fd=directories.tree, follow_symlinks=False)
        self.counts.symlinks += 1
        return entry_of(path, "symlink", status, target=target)

    def _file(
        self, path: str, name: str, status: os.stat_result, directories: _Directories
    ) -> Pending:
        copy = f"{self._tree}/{path}"
        key = (status.st_dev, status.st_ino)
        if status.st_nlink > 1 and key in self._inodes:
            earlier = self._inodes[key]
            first = earlier if isinstance(earlier, Entry) else earlier.result().entry
            if first is not None and link(f"{self._tree}/{first.path}", copy):
                self._count_file(first.size)
                self.counts.hard_links += 1
                return relinked(first, path)
        linked = self._linked_from_previous(path, name, status, directories)
        if isinstance(linked, bytes):
            return linked
        item = linked if linked is not None else self._submit(path, copy)
        if status.st_nlink > 1:
            self._inodes[key] = item
        return item

    def _submit(self, path: str, copy: str) -> Future[_Copy]:
        return self._pool.submit(self._copied, path, f"{self._source}/{path}", copy)

    def _linked_from_previous(
        self, path: str, name: str, status: os.stat_result, directories: _Directories
    ) -> Entry | bytes | None:
        """A hard link to the previous snapshot's copy if the file is unchanged: its index line,
        or its entry if the data dir has other links to it (they are linked to this one)."""
        known = self._known.get(path)
        if known is None or directories.previous is None:
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
            kept = os.lstat(name, dir_fd=directories.previous)
        except GONE:
            return None
        if not same_file_metadata(kept, status):
            return None  # chmod/chown since, or a damaged copy: the link would carry the old
        if self._checksum and _live_sha256(f"{self._source}/{path}") != sha256:
            return None
        try:
            os.link(
                name,
                name,
                src_dir_fd=directories.previous,
                dst_dir_fd=directories.tree,
                follow_symlinks=False,
            )
        except OSError as error:
            if error.errno in NO_LINK:
                return None
            raise
        counts = self.counts
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
                    copied = copier.copy(
                        source, target, before, self._done, target_device=self._tree_device
                    )
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
    return not isinstance(item, Future) or item.done()


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
