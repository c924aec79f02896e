"""Bringing the live data dir back to a snapshot by changing only what differs.

A file differs when its type, size, mtime, mode or owner differ (and its content, with
``checksum``). It is copied from the snapshot to a temp name beside it, hashed on the way and
checked against the index before anything moves; then the live file is renamed into ``replaced``
under the same relative path and the copy renamed into place. Paths the snapshot does not have
(what a failed release added) are renamed into ``replaced`` too. Nothing of the live data dir is
deleted, and no snapshot file is ever hard-linked into it (the app would modify it in place).
Directories get their modes, owners and mtimes once their contents are settled.

Every step is a rename or a write to a temp name, so a run killed at any instant is finished by
running it again with the same arguments: the temp names of the earlier run are removed, what it
set aside stays (a taken name in ``replaced`` gets a free variant), and the comparison picks up
where it stopped. The data dir itself is never renamed: it may be a mount point. Across file
systems (a data dir that is a mount point) a set-aside is a copy (``cp -a``), synced, then removed.
"""

# ruff: noqa: PTH101, PTH102, PTH104, PTH108, PTH112, PTH114, PTH115, PTH116, PTH211

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from specivod.adapters.backup.copying import Copier, child, listing, sync_filesystem
from specivod.adapters.backup.files import BytesDone, sha256_of
from specivod.adapters.backup.snapshot_index import ROOT, Entry, read_index
from specivod.domain.errors import BackupError

TEMP_PREFIX = ".specivod-sync-"
Step = Callable[[str, str], None]
"""Told ("set-aside", path) and ("placed", path) right after each rename (a test hook)."""


@dataclass(frozen=True)
class SyncPlan:
    files_to_copy: int
    bytes_to_copy: int
    paths_to_set_aside: int
    bytes_set_aside_elsewhere: int = 0
    """What setting aside copies to the parent's file system: everything set aside when the
    data dir is a mount point (a rename cannot cross), else nothing."""


@dataclass(frozen=True)
class SyncSummary:
    copied: int
    bytes_copied: int
    set_aside: int
    unchanged: int
    metadata_fixed: int


def temp_name(name: str) -> str:
    """The one temp name of a target name: the same on every run, so a rerun finds it."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return f"{TEMP_PREFIX}{digest}.tmp"


def plan_sync(tree: Path, index: Path, data_dir: Path, *, checksum: bool = False) -> SyncPlan:
    """What ``sync_from_snapshot`` would do now; reads nothing but stats (and, with
    ``checksum``, the live files of the same size and mtime)."""
    state = _Snapshot.load(index)
    live = str(data_dir)
    files = size = aside = elsewhere = 0
    if data_dir.is_dir():
        extras = list(_extras(live, state.kinds))
        aside = len(extras)
        elsewhere = sum(_bytes_under(f"{live}/{path}") for path in extras)
    for entry, status, differs in _compare(state, live, checksum):
        set_aside = differs and status is not None and not _is_dir_kept(entry, status)
        aside += set_aside
        if set_aside and status is not None and not stat.S_ISDIR(status.st_mode):
            elsewhere += status.st_size
        if differs and entry.kind == "file":
            files += 1
            size += 0 if entry.link_of else entry.size
    crossing = data_dir.is_dir() and data_dir.is_mount()
    return SyncPlan(files, size, aside, elsewhere if crossing else 0)


def _bytes_under(path: str) -> int:
    status = os.lstat(path)
    if not stat.S_ISDIR(status.st_mode):
        return status.st_size
    total = 0
    for directory, _, names in os.walk(path):
        for name in names:
            total += os.lstat(f"{directory}/{name}").st_size
    return total


def check_sources(
    tree: Path,
    index: Path,
    data_dir: Path,
    *,
    checksum: bool = False,
    done: BytesDone | None = None,
) -> None:
    """``BackupError`` unless every snapshot file a sync would copy now has the size and sha256
    the index records: a damaged backup is found before a restore changes anything."""
    state = _Snapshot.load(index)
    for entry, _, differs in _compare(state, str(data_dir), checksum):
        if not differs or entry.kind != "file" or entry.link_of is not None:
            continue
        source = tree / entry.path
        try:
            size = source.lstat().st_size
            actual = sha256_of(source, done) if size == entry.size else None
        except OSError as error:
            raise BackupError(f"cannot read {source}: {error}") from None
        if actual != entry.sha256:
            raise BackupError(
                f"{source} is corrupt: it does not match the snapshot index "
                f"({size} bytes, sha256 {actual})"
            )


def sync_from_snapshot(
    tree: Path,
    index: Path,
    data_dir: Path,
    replaced: Path,
    *,
    checksum: bool = False,
    done: BytesDone | None = None,
    step: Step | None = None,
) -> SyncSummary:
    """Make ``data_dir`` exactly the snapshot (``tree`` and its ``index``); what it replaces or
    removes goes to ``replaced``, a sibling of ``data_dir`` made 0700 on first need."""
    if replaced.absolute().parent != data_dir.absolute().parent or replaced.name in {
        data_dir.name,
        "",
    }:
        raise BackupError(f"{replaced} is not beside the data dir {data_dir}")
    state = _Snapshot.load(index)
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        run = _Run(tree, data_dir, replaced, done, step)
        for path in list(_extras(run.live, state.kinds)):
            run.set_aside(path)
        unchanged = 0
        for entry, status, differs in _compare(state, run.live, checksum):
            if not differs:
                unchanged += 1
            elif not _is_dir_kept(entry, status):
                run.replace(entry, status)
        fixed = sum(run.fix_directory(entry) for entry in reversed(state.directories))
        run.sync()
    except OSError as error:
        raise BackupError(f"cannot bring {data_dir} back to the snapshot: {error}") from None
    return SyncSummary(run.copied, run.bytes_copied, run.set_aside_count, unchanged, fixed)


@dataclass
class _Snapshot:
    """The index in memory (about 400 bytes an entry), read once."""

    entries: list[Entry]
    kinds: dict[str, str]
    directories: list[Entry]

    @classmethod
    def load(cls, index: Path) -> _Snapshot:
        entries = list(_entries(index))
        kinds: dict[str, str] = {entry.path: entry.kind for entry in entries}
        if kinds.get(ROOT) != "dir":
            raise BackupError(f"the snapshot index {index} has no root directory")
        return cls(entries, kinds, [entry for entry in entries if entry.kind == "dir"])


def _entries(index: Path) -> Iterator[Entry]:
    try:
        yield from read_index(index)
    except (OSError, ValueError) as error:
        raise BackupError(f"cannot read the snapshot index {index}: {error}") from None


def _extras(live: str, kinds: dict[str, str]) -> Iterator[str]:
    """Live paths the snapshot does not have, outermost only; temp files of an earlier run are
    removed on the way (they are this module's, never the app's)."""
    pending = [ROOT]
    while pending:
        parent = pending.pop()
        for name in listing(f"{live}/{parent}"):
            path = child(parent, name)
            kind = kinds.get(path)
            if kind is None and name.startswith(TEMP_PREFIX) and name.endswith(".tmp"):
                os.unlink(f"{live}/{path}")
            elif kind is None:
                yield path
            elif kind == "dir" and stat.S_ISDIR(os.lstat(f"{live}/{path}").st_mode):
                pending.append(path)


def _compare(
    state: _Snapshot, live: str, checksum: bool
) -> Iterator[tuple[Entry, os.stat_result | None, bool]]:
    """Each entry with its live status (None: missing) and whether it differs, computed when it
    is asked for, so that what the consumer did to earlier entries counts."""
    inodes: dict[int, str] = {}
    for entry in state.entries:
        path = live if entry.path == ROOT else f"{live}/{entry.path}"
        try:
            # The root is whatever data_dir names, a symlink to a directory included.
            status: os.stat_result | None = os.stat(path) if path == live else os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            status = None
        yield (
            entry,
            status,
            not _matches(entry, status, path=path, live=live, inodes=inodes, checksum=checksum),
        )


def _matches(
    entry: Entry,
    status: os.stat_result | None,
    *,
    path: str,
    live: str,
    inodes: dict[int, str],
    checksum: bool,
) -> bool:
    if status is None:
        return False
    if entry.kind == "dir":
        return stat.S_ISDIR(status.st_mode)
    if entry.kind == "symlink":
        return (
            stat.S_ISLNK(status.st_mode)
            and os.readlink(path) == entry.target
            and (status.st_uid, status.st_gid, status.st_mtime_ns)
            == (entry.uid, entry.gid, entry.mtime_ns)
        )
    same = stat.S_ISREG(status.st_mode) and (
        status.st_size,
        status.st_mtime_ns,
        stat.S_IMODE(status.st_mode),
        status.st_uid,
        status.st_gid,
    ) == (entry.size, entry.mtime_ns, entry.mode, entry.uid, entry.gid)
    if same and entry.link_of is not None:
        same = os.lstat(f"{live}/{entry.link_of}").st_ino == status.st_ino
    elif same and status.st_nlink > 1:
        same = inodes.setdefault(status.st_ino, entry.path) == entry.path
    if same and not checksum and entry.inode and _not_provably_untouched(entry, status):
        # Same size and mtime, but written since the snapshot (or a different file): the
        # content decides, so an in-place write that kept the mtime is not missed.
        return sha256_of(Path(path)) == entry.sha256
    return same and (not checksum or sha256_of(Path(path)) == entry.sha256)


def _not_provably_untouched(entry: Entry, status: os.stat_result) -> bool:
    """The snapshot saw this very file (inode) and nothing changed it since (ctime, which no
    program can set back)."""
    return (status.st_ino, status.st_ctime_ns) != (entry.inode, entry.ctime_ns)


def _is_dir_kept(entry: Entry, status: os.stat_result | None) -> bool:
    """A live directory where the snapshot has one differs only in metadata, fixed at the end."""
    return entry.kind == "dir" and status is not None and stat.S_ISDIR(status.st_mode)


class _Run:
    def __init__(
        self, tree: Path, data_dir: Path, replaced: Path, done: BytesDone | None, step: Step | None
    ) -> None:
        self.tree = str(tree)
        self.live = str(data_dir)
        self.replaced = str(replaced)
        self.done = done
        self.step = step
        self.copier = Copier()
        self.touched: set[str] = set()
        self.copied = self.bytes_copied = self.set_aside_count = 0

    def replace(self, entry: Entry, status: os.stat_result | None) -> None:
        live = f"{self.live}/{entry.path}"
        parent, _, name = live.rpartition("/")
        if entry.kind == "dir":
            if status is not None:
                self.set_aside(entry.path)
            os.mkdir(live, 0o700)
            self.touched.add(parent)
            return
        temp = f"{parent}/{temp_name(name)}"
        if os.path.lexists(temp):
            os.unlink(temp)
        if entry.kind == "symlink":
            assert entry.target is not None
            os.symlink(entry.target, temp)
            os.lchown(temp, entry.uid, entry.gid)
            os.utime(temp, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
        elif entry.link_of is not None:
            os.link(f"{self.live}/{entry.link_of}", temp)
            self.copied += 1
        else:
            self._copy(entry, temp)
        if status is not None:
            self.set_aside(entry.path)
        os.rename(temp, live)
        self.touched.add(parent)
        if self.step is not None:
            self.step("placed", entry.path)

    def _copy(self, entry: Entry, temp: str) -> None:
        try:
            source = os.open(f"{self.tree}/{entry.path}", os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as error:
            raise BackupError(f"the snapshot's {entry.path} cannot be read: {error}") from None
        try:
            target = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                copied = self.copier.copy(source, target, os.fstat(source), self.done)
                if (copied.size, copied.sha256) != (entry.size, entry.sha256):
                    os.unlink(temp)
                    raise BackupError(
                        f"the snapshot's {entry.path} does not match its sha256: not restored"
                    )
                os.fchown(target, entry.uid, entry.gid)
                os.fchmod(target, entry.mode)
                os.utime(target, ns=(entry.mtime_ns, entry.mtime_ns))
                os.fsync(target)
            finally:
                os.close(target)
        finally:
            os.close(source)
        self.copied += 1
        self.bytes_copied += copied.size

    def set_aside(self, path: str) -> None:
        """Move the live ``path`` to a free name under the same relative path in ``replaced``."""
        target = self._aside_name(path)
        source = f"{self.live}/{path}"
        status = os.lstat(source)
        try:
            if stat.S_ISREG(status.st_mode) and status.st_nlink > 1:
                # Another name in the data dir shares this inode: a rename would leave the
                # set-aside copy to be rewritten through it once the app runs again.
                self._move_by_copy(source, target)
            else:
                os.rename(source, target)
        except OSError as error:
            if error.errno != errno.EXDEV:  # the data dir is a mount point
                raise
            self._move_by_copy(source, target)
        self.touched.add(source.rpartition("/")[0])
        self.touched.add(target.rpartition("/")[0])
        self.set_aside_count += 1
        if self.step is not None:
            self.step("set-aside", path)

    def _move_by_copy(self, source: str, target: str) -> None:
        try:
            subprocess.run(["cp", "-a", "--", source, target], check=True, capture_output=True)
        except subprocess.CalledProcessError as failed:
            reason = failed.stderr.decode(errors="replace").strip()
            raise BackupError(f"cannot set {source} aside in {self.replaced}: {reason}") from None
        sync_filesystem(Path(self.replaced))
        if stat.S_ISDIR(os.lstat(source).st_mode):
            _remove_copied_tree(source)
        else:
            os.unlink(source)

    def _aside_name(self, path: str) -> str:
        if not os.path.isdir(self.replaced):
            os.mkdir(self.replaced, 0o700)
            self.touched.add(self.replaced.rpartition("/")[0])
        directory = self.replaced
        *parents, name = path.split("/")
        for part in parents:
            directory = _free(directory, part, want_directory=True)
            if not os.path.isdir(directory):
                os.mkdir(directory, 0o700)
                self.touched.add(directory.rpartition("/")[0])
        return _free(directory, name, want_directory=False)

    def fix_directory(self, entry: Entry) -> bool:
        path = self.live if entry.path == ROOT else f"{self.live}/{entry.path}"
        status = os.lstat(path)
        if (stat.S_IMODE(status.st_mode), status.st_uid, status.st_gid, status.st_mtime_ns) == (
            entry.mode,
            entry.uid,
            entry.gid,
            entry.mtime_ns,
        ):
            return False
        os.lchown(path, entry.uid, entry.gid)
        os.chmod(path, entry.mode)
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))
        self.touched.add(path)
        return True

    def sync(self) -> None:
        for directory in sorted(self.touched, key=len, reverse=True):
            try:
                descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # moved aside since: nothing of the snapshot is in it
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)


def _free(directory: str, name: str, *, want_directory: bool) -> str:
    """``directory/name``, or ``name~1``, ``name~2``... when that is taken (by anything, or, for
    a directory wanted, by something that is not a directory)."""
    candidate, number = name, 0
    while True:
        path = f"{directory}/{candidate}"
        if not os.path.lexists(path):
            return path
        if want_directory and os.path.isdir(path) and not os.path.islink(path):
            return path
        number += 1
        candidate = f"{name}~{number}"


def _remove_copied_tree(path: str) -> None:
    """Remove a tree whose copy is already synced in ``replaced`` (a move across file systems)."""
    try:
        subprocess.run(["rm", "-rf", "--one-file-system", "--", path], check=True)
    except subprocess.CalledProcessError as failed:
        raise BackupError(f"cannot remove {path} after setting it aside: {failed}") from None
