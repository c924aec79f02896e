"""A comparable snapshot of a directory tree, for asserting that a restore gave back exactly what
was backed up."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root`` (``root`` too): kind, mode, owner, group, hard links, whole-second
    mtime, and the content hash or link target."""
    entries: dict[str, tuple[object, ...]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        status = path.lstat()
        if stat.S_ISLNK(status.st_mode):
            content = str(path.readlink())
        elif stat.S_ISREG(status.st_mode):
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = ""
        entries[str(path.relative_to(root))] = (
            stat.S_IFMT(status.st_mode),
            stat.S_IMODE(status.st_mode),
            status.st_uid,
            status.st_gid,
            status.st_nlink if stat.S_ISREG(status.st_mode) else 0,
            int(status.st_mtime) if not stat.S_ISLNK(status.st_mode) else 0,
            content,
        )
    return entries
