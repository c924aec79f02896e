"""File handling every backup file shares: private modes, fsync, atomic small writes, and sha256
computed in bounded chunks so no file is ever held in memory."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
CHUNK = 1 << 20

BytesDone = Callable[[int], None]


def create_private_file(path: Path) -> BinaryIO:
    """A new file for writing, mode 0600 from its first byte; an existing one is an error."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    return os.fdopen(descriptor, "wb")


def make_private_directory(path: Path) -> None:
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    path.chmod(DIRECTORY_MODE)


def fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_private_atomically(path: Path, content: bytes) -> None:
    """Write a new small file so readers see all of it or none: temp file, fsync, rename."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fchmod(stream.fileno(), FILE_MODE)
            os.fsync(stream.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def sha256_of(path: Path, done: BytesDone | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
            if done is not None:
                done(len(chunk))
    return digest.hexdigest()


class HashingWriter:
    """A write-only stream that hashes and counts what passes through to ``target``."""

    def __init__(self, target: BinaryIO, done: BytesDone | None = None) -> None:
        self._target = target
        self._digest = hashlib.sha256()
        self._done = done
        self.size = 0

    def write(self, data: bytes) -> int:
        written = self._target.write(data)
        self._digest.update(data)
        self.size += len(data)
        if self._done is not None:
            self._done(len(data))
        return written

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


class CountingReader:
    """A read-only stream that reports how many bytes have been read from ``source``."""

    def __init__(self, source: BinaryIO, done: BytesDone) -> None:
        self._source = source
        self._done = done

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._done(len(data))
        return data


def tree_size(root: Path) -> int:
    """Bytes of the regular files under ``root`` (not following symlinks)."""
    total = 0
    for directory, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                status = os.lstat(os.path.join(directory, name))  # noqa: PTH118
                total += status.st_size if stat.S_ISREG(status.st_mode) else 0
    return total


@contextlib.contextmanager
def removed_on_error(path: Path) -> Iterator[Path]:
    """Yield ``path``; delete the tree there when the block raises (cancellation included)."""
    try:
        yield path
    except BaseException:
        remove_tree(path)
        raise


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
