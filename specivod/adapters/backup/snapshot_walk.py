"""Walking the live data dir into a new snapshot tree, one path at a time (see ``snapshot``).

Paths are plain strings relative to the data dir: a ``Path`` per file would cost more than the
system calls it wraps, and a data dir has 100,000 of them.

With worker processes, a name listed as a file that is a directory by the time it is visited is
left out, counted as vanished and logged, like a directory made after its parent was listed: a
snapshot of a tree that changes while it is taken holds what did not change during the walk.
"""

# ruff: noqa: PTH208

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from specivod.adapters.backup.copying import Copier, child, link, set_metadata
from specivod.adapters.backup.files import BytesDone
from specivod.adapters.backup.snapshot_file import (
    GONE,
    Copy,
    Counts,
    Place,
    copy_file,
    link_from_previous,
)
from specivod.adapters.backup.snapshot_index import (
    ROOT,
    Entry,
    Known,
    encoded,
    entry_of,
    relinked,
)
from specivod.adapters.backup.snapshot_pool import WorkerPool, ready_pool
from specivod.adapters.backup.snapshot_worker import DEFER, Reply
from specivod.adapters.backup.tarwalk import StatSeen

log = logging.getLogger(__name__)

COPY_THREADS = 4
"""Reads of a cold cache overlap: 4 beat 3 and 2 (2 cores), at the price of more GIL turns."""
WINDOW = 256
"""Files copied or queued ahead of the index writer, at most."""
PARALLEL_WINDOW = 4096
"""The same with worker processes: enough batches ahead to keep every worker busy."""
BATCH_FILES = 256
"""Names of one directory sent to a worker at a time."""
SMALLEST_BATCH = 16
"""A directory with fewer files is walked here: a batch costs more than its files then."""
OPEN_BATCHES = 32
"""Batches sent and not yet settled, at most: each holds three directory descriptors."""


@dataclass(slots=True)
class _Directories:
    """Open descriptors of one directory: in the data dir, the new tree and the previous one.
    Names are looked up relative to them: a path walk per file would cost more. Closed when the
    last of its holders lets go: the walk's stack, and each batch of its names not settled."""

    live: int
    tree: int
    previous: int | None
    holders: int = 1

    def hold(self) -> _Directories:
        self.holders += 1
        return self

    def close(self) -> None:
        self.holders -= 1
        if self.holders == 0:
            for descriptor in (self.live, self.tree, self.previous):
                if descriptor is not None:
                    os.close(descriptor)

    @property
    def descriptors(self) -> list[int]:
        return [self.live, self.tree] + ([] if self.previous is None else [self.previous])


@dataclass(slots=True)
class _Batch:
    """Names of one directory a worker links or copies; holds the directory's descriptors until
    the walk has settled every name (it visits some itself)."""

    directory: str
    reply: Future[Reply]
    directories: _Directories
    unsettled: int
    lines: list[bytes | None] | None = None
    """The worker's reply, once the walk took it."""


@dataclass(frozen=True, slots=True)
class _Slot:
    batch: _Batch
    index: int
    name: str


Pending = Entry | bytes | Future[Copy] | _Slot
"""In index order: an entry, a line already encoded, a copy under way, or a name a worker has."""


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


Listing = Iterator[tuple[str, _Slot | None]]
"""A directory's names in order; those a worker has come with their slot."""


class Walker:
    """Walks the live tree in index order. File copies run on a few threads (reading, hashing
    and writing release the GIL, so one file's hashing overlaps another's I/O); everything else,
    and all counting, happens on the walking thread. ``done`` may be called from those threads,
    one call at a time.

    Against a large previous snapshot, worker processes (``snapshot_pool``) take the regular
    files of each directory in batches, and the walk only lists, orders and writes; what they
    leave (hard links, symlinks, special files) the walk visits when it reaches it in order."""

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
        workers: WorkerPool | None = None,
    ) -> None:
        """``workers``: started for this walk (``start_pool``); it stops them."""
        self._source = str(source)
        self._tree = str(tree)
        self._previous = previous
        self._known = known
        self._checksum = checksum
        self._done = None if done is None else _serialized(done)
        self._seen = seen
        self._copiers = threading.local()
        self._pool = ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="snapshot-copy")
        self._inodes: dict[tuple[int, int], Entry | Future[Copy]] = {}
        self._tree_device = os.lstat(self._tree).st_dev
        self._directories: list[tuple[str, os.stat_result]] = []
        self._batches: deque[_Batch] = deque()
        self._workers = ready_pool(workers)
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
        """Wait for the copies under way; drop those not started. Workers end after their batch
        when the walk is complete, and at once when it is not."""
        workers, self._workers = self._workers, None
        if workers is not None:
            workers.close(kill=bool(self._batches))
        self._pool.shutdown(wait=True, cancel_futures=True)
        while self._batches:
            self._batches.popleft().directories.close()

    def _walk(self) -> Iterator[bytes]:
        status = os.lstat(self._source)
        self.counts.directories += 1
        yield encoded(entry_of(ROOT, "dir", status))
        root = _Directories(
            _open_directory(self._source),
            _open_directory(self._tree),
            None if self._previous is None else _open_if_there(self._previous),
        )
        stack: list[tuple[str, Listing, _Directories]] = []
        try:
            stack.append((ROOT, self._listing(ROOT, root), root))
        except BaseException:
            root.close()
            raise
        window = WINDOW if self._workers is None else PARALLEL_WINDOW
        pending: deque[Pending] = deque()
        try:
            while stack:
                parent, names, directories = stack[-1]
                name, slot = next(names, (None, None))
                if name is None:
                    stack.pop()[2].close()
                    continue
                if slot is not None:
                    pending.append(slot)
                elif (item := self._step(parent, name, directories, stack)) is not None:
                    if not pending and type(item) is bytes:
                        yield item  # a file linked from the previous snapshot, none before
                        continue
                    pending.append(item)
                while pending and (
                    len(pending) > window or len(self._batches) > OPEN_BATCHES or _ready(pending[0])
                ):
                    if (line := self._settle(pending)) is not None:
                        yield line
            while pending:
                if (line := self._settle(pending)) is not None:
                    yield line
        finally:
            for _, _, directories in stack:
                directories.close()

    def _step(
        self,
        parent: str,
        name: str,
        directories: _Directories,
        stack: list[tuple[str, Listing, _Directories]],
    ) -> Pending | None:
        """Visit the name; a directory goes on the stack (its contents come next)."""
        found = self._visit(child(parent, name), name, directories)
        if found is None:
            return None
        item, children = found
        if children is not None:
            path, opened = children
            try:
                stack.append((path, self._listing(path, opened), opened))
            except BaseException:
                opened.close()
                raise
        return item

    def _listing(self, path: str, directories: _Directories) -> Listing:
        """The names in the directory, sorted; with workers, its entries that are not
        directories go to them in batches now, each name with its slot."""
        if self._workers is None:
            return ((name, None) for name in sorted(os.listdir(directories.live)))
        with os.scandir(directories.live) as scan:
            entries = sorted(
                ((entry.name, entry.is_dir(follow_symlinks=False)) for entry in scan),
            )
        files = [name for name, is_directory in entries if not is_directory]
        if len(files) < SMALLEST_BATCH:
            return ((name, None) for name, _ in entries)
        return self._batched(path, entries, files, directories)

    def _batched(
        self,
        path: str,
        entries: list[tuple[str, bool]],
        files: list[str],
        directories: _Directories,
    ) -> Listing:
        """The listing of a directory whose files go to workers: each batch is sent when the walk
        reaches its first name, so only ``OPEN_BATCHES`` are out at a time."""
        batch: _Batch | None = None
        index = 0
        for name, is_directory in entries:
            if is_directory:
                yield name, None
                continue
            if index % BATCH_FILES == 0:
                names = files[index : index + BATCH_FILES]
                batch = self._submit_batch(path, names, directories)
            assert batch is not None
            yield name, _Slot(batch, index % BATCH_FILES, name)
            index += 1

    def _submit_batch(self, path: str, names: list[str], directories: _Directories) -> _Batch:
        assert self._workers is not None
        known = self._known
        knowns = [known.get(child(path, name)) for name in names]
        reply = self._workers.submit((path, names, knowns), directories.descriptors)
        batch = _Batch(path, reply, directories.hold(), len(names))
        self._batches.append(batch)
        return batch

    def _settle(self, pending: deque[Pending]) -> bytes | None:
        """The head's line; None when it has none (vanished), or when the walk still had to visit
        a worker's name (its copy is queued first then)."""
        item = pending.popleft()
        if isinstance(item, _Slot):
            visited = self._from_worker(item)
            if visited is None or isinstance(visited, bytes):
                return visited
            pending.appendleft(visited)
            return None
        if isinstance(item, bytes):
            return item
        if isinstance(item, Entry):
            return encoded(item)
        entry = self.counts.count_copy(item.result())
        return None if entry is None else encoded(entry)

    def _from_worker(self, slot: _Slot) -> bytes | Pending | None:
        batch = slot.batch
        lines = batch.lines
        if lines is None:
            lines, counts, copied = batch.reply.result()
            batch.lines = lines
            self.counts.add(counts)
            if copied and self._done is not None:
                self._done(copied)
        line = lines[slot.index]
        try:
            if line != DEFER:
                return line
            return self._visit_left(child(batch.directory, slot.name), slot.name, batch.directories)
        finally:
            batch.unsettled -= 1
            if batch.unsettled == 0:
                self._batches.remove(batch)
                batch.directories.close()

    def _visit_left(self, path: str, name: str, directories: _Directories) -> Pending | None:
        """A name a worker left to the walk, visited in index order: no directory any more (it
        was listed as a file)."""
        found = self._visit(path, name, directories, late=True)
        return None if found is None else found[0]

    def _later(self, path: str, name: str, directories: _Directories) -> _Slot:
        """A hard-linked file the walk reached ahead of names still with the workers: it is
        visited when settled, in index order, so the first name of an inode is the first in the
        index (a restore links the later names to it)."""
        reply: Future[Reply] = Future()
        reply.set_result(([DEFER], Counts(), 0))
        batch = _Batch(path.rpartition("/")[0] or ROOT, reply, directories.hold(), 1)
        self._batches.append(batch)
        return _Slot(batch, 0, name)

    def _visit(
        self, path: str, name: str, directories: _Directories, *, late: bool = False
    ) -> tuple[Pending, tuple[str, _Directories] | None] | None:
        """``late``: at the name's turn in index order (else where the walk is, which with
        workers is ahead of it)."""
        try:
            status = os.lstat(name, dir_fd=directories.live)
            if self._seen is not None:
                self._seen(Path(f"{self._source}/{path}"))
            mode = status.st_mode
            if stat.S_ISREG(mode):
                if status.st_nlink > 1 and not late and self._workers is not None:
                    return self._later(path, name, directories), None
                return self._file(path, name, status, directories), None
            if stat.S_ISDIR(mode):
                if not late:
                    return self._directory(path, name, status, directories)
                log.warning(
                    "snapshot: leaving out %s/%s: it turned into a directory during the snapshot",
                    self._source,
                    path,
                )
                self.counts.vanished += 1
                return None
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
    ) -> tuple[Entry, tuple[str, _Directories]]:
        live = _open_directory(name, directories.live)
        try:
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
        return entry_of(path, "dir", status), (path, _Directories(live, copy, earlier))

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
                self.counts.count_file(first.size)
                self.counts.hard_links += 1
                return relinked(first, path)
        linked = link_from_previous(
            path,
            name,
            status,
            self._known.get(path),
            (directories.live, directories.tree, directories.previous),
            checksum_of=f"{self._source}/{path}" if self._checksum else None,
            counts=self.counts,
        )
        if isinstance(linked, bytes):
            return linked
        item = linked if linked is not None else self._submit(path, copy)
        if status.st_nlink > 1:
            self._inodes[key] = item
        return item

    def _submit(self, path: str, copy: str) -> Future[Copy]:
        return self._pool.submit(self._copied, path, f"{self._source}/{path}", copy)

    def _copied(self, path: str, live: str, copy: str) -> Copy:
        copier: Copier | None = getattr(self._copiers, "copier", None)
        if copier is None:
            copier = self._copiers.copier = Copier()
        return copy_file(
            path, Place(live, copy), copier, done=self._done, tree_device=self._tree_device
        )


def _ready(item: Pending) -> bool:
    if type(item) is _Slot:
        return item.batch.lines is not None or item.batch.reply.done()
    return not isinstance(item, Future) or item.done()


def _serialized(done: BytesDone) -> BytesDone:
    lock = threading.Lock()

    def report(amount: int) -> None:
        with lock:
            done(amount)

    return report
