"""Copying one open file into another while hashing what was copied.

A reflink (the FICLONE ioctl: btrfs, XFS) shares the source's extents and costs no data blocks;
the clone is then read once for its hash. Without reflinks the copy goes through a 1 MiB buffer
that is hashed on the way; a sparse source (fewer blocks than its size) is copied data segment by
data segment (SEEK_DATA / SEEK_HOLE) so its holes stay holes. Whichever path is taken, the sha256
is of the bytes a reader of the copy sees, holes included as zeros.
"""

# ruff: noqa: PTH101, PTH208

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from specivod.adapters.backup.files import CHUNK, BytesDone

FICLONE = 0x40049409
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM}
_ZEROS = bytes(CHUNK)


@dataclass(frozen=True, slots=True)
class Copied:
    size: int
    """Bytes the copy holds: what was read before the source's end."""
    sha256: str
    reflinked: bool


class Copier:
    """Copies file descriptors; remembers per pair of devices whether reflinks work there."""

    def __init__(self, *, reflink: bool = True) -> None:
        self._reflink = reflink
        self._reflinks: dict[tuple[int, int], bool] = {}
        self._buffer = bytearray(CHUNK)

    def copy(
        self,
        source: int,
        target: int,
        source_status: os.stat_result,
        done: BytesDone | None,
        *,
        target_device: int | None = None,
    ) -> Copied:
        """Copy the open regular file ``source`` into the empty read-write file ``target``
        (on ``target_device`` if given: one fstat less a file)."""
        if self._reflink and self._clone(source, target, source_status, target_device):
            size, sha256 = self._hash(target, done)  # the clone: it cannot change meanwhile
            return Copied(size, sha256, reflinked=True)
        if source_status.st_blocks * 512 < source_status.st_size:
            size, sha256 = self._copy_sparse(source, target, source_status.st_size, done)
        else:
            size, sha256 = self._copy_range(
                source,
                target=target,
                start=0,
                end=source_status.st_size,
                digest=hashlib.sha256(),
                done=done,
            )
        return Copied(size, sha256, reflinked=False)

    def _clone(
        self, source: int, target: int, source_status: os.stat_result, target_device: int | None
    ) -> bool:
        if target_device is None:
            target_device = os.fstat(target).st_dev
        devices = (source_status.st_dev, target_device)
        if self._reflinks.get(devices) is False:
            return False
        try:
            fcntl.ioctl(target, FICLONE, source)
        except OSError as error:
            if error.errno not in _NO_REFLINK:
                raise
            self._reflinks[devices] = False
            return False
        self._reflinks[devices] = True
        return True

    def _hash(self, source: int, done: BytesDone | None) -> tuple[int, str]:
        digest = hashlib.sha256()
        view = memoryview(self._buffer)
        size = 0
        while read := os.preadv(source, [view], size):
            digest.update(view[:read])
            size += read
            if done is not None:
                done(read)
        return size, digest.hexdigest()

    def _copy_range(
        self,
        source: int,
        *,
        target: int,
        start: int,
        end: int | None,
        digest: hashlib._Hash,
        done: BytesDone | None,
    ) -> tuple[int, str]:
        """Copy from ``start`` to ``end`` (or the source's end) at the same offsets; the offset
        reached and the hex digest so far."""
        view = memoryview(self._buffer)
        position = start
        while end is None or position < end:
            wanted = CHUNK if end is None else min(CHUNK, end - position)
            read = os.preadv(source, [view[:wanted]], position)
            if not read:
                break
            written = 0
            while written < read:
                written += os.pwrite(target, view[written:read], position + written)
            digest.update(view[:read])
            position += read
            if done is not None:
                done(read)
        return position, digest.hexdigest()

    def _copy_sparse(
        self, source: int, target: int, size: int, done: BytesDone | None
    ) -> tuple[int, str]:
        digest = hashlib.sha256()
        position = 0
        while position < size:
            try:
                data = os.lseek(source, position, os.SEEK_DATA)
            except OSError as error:
                if error.errno != errno.ENXIO:  # ENXIO: nothing but a hole up to the end
                    raise
                data = size
            data = min(data, size)
            _hash_zeros(digest, data - position)
            if data >= size:
                position = size
                break
            hole = min(os.lseek(source, data, os.SEEK_HOLE), size)
            reached, _ = self._copy_range(
                source, target=target, start=data, end=hole, digest=digest, done=done
            )
            if reached < hole:  # the source shrank while copied
                position = reached
                break
            position = hole
        os.ftruncate(target, position)
        return position, digest.hexdigest()


def _hash_zeros(digest: hashlib._Hash, count: int) -> None:
    zeros = memoryview(_ZEROS)
    while count > 0:
        step = min(count, CHUNK)
        digest.update(zeros[:step])
        count -= step


def sync_filesystem(path: Path) -> None:
    """Flush every write to the file system holding ``path`` (syncfs(2); sync(2) if missing)."""
    libc = ctypes.CDLL(None, use_errno=True)
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syncfs = getattr(libc, "syncfs", None)
        if syncfs is None:
            os.sync()
        elif syncfs(descriptor) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(path))
    finally:
        os.close(descriptor)


def listing(path: str) -> list[str]:
    return sorted(os.listdir(path))


def child(parent: str, name: str) -> str:
    """The relative path of ``name`` in the directory ``parent`` ("." is the root)."""
    return name if parent == "." else f"{parent}/{name}"


NO_LINK = frozenset({errno.EXDEV, errno.EMLINK, errno.EPERM, errno.ENOENT})
"""Why a hard link may be refused where a copy does instead."""


def link(existing: str, new: str) -> bool:
    try:
        os.link(existing, new)
    except OSError as error:
        if error.errno in NO_LINK:
            return False
        raise
    return True


def same_file_metadata(kept: os.stat_result, live: os.stat_result) -> bool:
    return (
        stat.S_ISREG(kept.st_mode)
        and kept.st_size == live.st_size
        and kept.st_mtime_ns == live.st_mtime_ns
        and stat.S_IMODE(kept.st_mode) == stat.S_IMODE(live.st_mode)
        and (kept.st_uid, kept.st_gid) == (live.st_uid, live.st_gid)
    )


def same_version(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
        after.st_size,
        after.st_mtime_ns,
        after.st_ctime_ns,
    )


def set_metadata(path: str | int, status: os.stat_result) -> None:
    """Owner, then mode (a chown clears setuid bits), then times: the order that keeps all."""
    if isinstance(path, int):
        os.fchown(path, status.st_uid, status.st_gid)
        os.fchmod(path, stat.S_IMODE(status.st_mode))
    else:
        os.lchown(path, status.st_uid, status.st_gid)
        os.chmod(path, stat.S_IMODE(status.st_mode))
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
