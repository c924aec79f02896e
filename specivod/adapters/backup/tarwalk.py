"""Writing a live directory tree into a tar stream, as GNU tar does on a busy file system.

A file or directory that vanishes before it is read (a temporary upload) is skipped and counted;
a later hard link to a file that vanished carries the content itself.
A regular file is written with the size it had when it was stat'ed, so the archive stays valid
whatever happens to the file meanwhile: one that shrank is padded with zeros, one that grew is
cut at that size; both, and one rewritten in place, are counted as changed. Entries are visited
depth first in sorted order, the order ``tarfile.TarFile.add`` uses.
"""

from __future__ import annotations

import copy
import logging
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

StatSeen = Callable[[Path], None]
"""Called with each path right after it was stat'ed and before it is read."""


@dataclass
class TreeCounts:
    files: int = 0
    """Regular files in the archive, each hard link counted as a file."""
    vanished: int = 0
    changed: int = 0
    vanished_files: set[str] = field(default_factory=set)
    """Archive names of the files that vanished after they were stat'ed."""


class _ExactReader:
    """Reads from ``source`` as if it had exactly ``size`` bytes: zeros after an early end."""

    def __init__(self, source: BinaryIO, size: int) -> None:
        self._source = source
        self._left = size
        self.shrank = False

    def read(self, amount: int) -> bytes:
        amount = min(amount, self._left)
        data = self._source.read(amount)
        while len(data) < amount:
            more = self._source.read(amount - len(data))
            if not more:
                self.shrank = True
                more = bytes(amount - len(data))
            data += more
        self._left -= len(data)
        return data


def add_tree(tar: tarfile.TarFile, root: Path, seen: StatSeen | None = None) -> TreeCounts:
    """Add ``root`` as ``.`` and everything under it; the counts of what was added or missed."""
    counts = TreeCounts()
    _add(tar, root, ".", counts, seen)
    return counts


def _add(
    tar: tarfile.TarFile, path: Path, name: str, counts: TreeCounts, seen: StatSeen | None
) -> None:
    try:
        info = tar.gettarinfo(str(path), arcname=name)
    except FileNotFoundError:
        counts.vanished += 1
        return
    if seen is not None:
        seen(path)
    if info is None:
        log.warning("skipping %s: sockets and doors cannot be archived", path)
    elif info.islnk() and info.linkname in counts.vanished_files:
        # The name tar would link to was never written: this name carries the content.
        _add_file(tar, path, _as_regular_file(info, path), counts)
    elif info.isreg():
        _add_file(tar, path, info, counts)
    elif info.isdir():
        try:
            children = sorted(child.name for child in path.iterdir())
        except FileNotFoundError:
            counts.vanished += 1
            return
        tar.addfile(info)
        for child in children:
            _add(tar, path / child, f"{name}/{child}", counts, seen)
    else:
        tar.addfile(info)
        counts.files += info.islnk()


def _as_regular_file(link: tarfile.TarInfo, path: Path) -> tarfile.TarInfo:
    regular = copy.copy(link)
    regular.type = tarfile.REGTYPE
    regular.linkname = ""
    try:
        regular.size = path.lstat().st_size
    except FileNotFoundError:
        regular.size = 0  # it vanished too: opening it says so
    return regular


def _add_file(tar: tarfile.TarFile, path: Path, info: tarfile.TarInfo, counts: TreeCounts) -> None:
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        counts.vanished += 1
        counts.vanished_files.add(info.name)
        return
    with stream:
        reader = _ExactReader(stream, info.size)
        tar.addfile(info, reader)  # type: ignore[arg-type]
        grew = stream.read(1) != b""
        rewritten = os.fstat(stream.fileno()).st_mtime != info.mtime
    counts.files += 1
    counts.changed += reader.shrank or grew or rewritten
