"""Real directory trees for the snapshot and sync tests: building them, changing a share of their
files, and describing them completely enough that two descriptions are equal only when the trees
are (content, kind, mode, owner, mtime, symlink target, which names share an inode)."""

from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path

IS_ROOT = os.geteuid() == 0
OTHER_UID, OTHER_GID = 4321, 8765

Description = dict[str, tuple[object, ...]]


def build_tree(root: Path, files: int = 1000, seed: int = 7) -> list[str]:
    """``files`` regular files of 0-12 KiB in 3 levels of directories; their relative paths."""
    rng = random.Random(seed)
    paths = []
    root.mkdir(parents=True, exist_ok=True)
    for number in range(files):
        relative = f"d{number % 10}/e{number % 7}/f{number % 3}/file-{number:05d}.bin"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randrange(0, 12 * 1024)))
        os.utime(path, ns=(1_600_000_000_000_000_000 + number, 1_600_000_000_000_000_000 + number))
        paths.append(relative)
    (root / "d1" / "empty").mkdir()
    (root / "d2").chmod(0o750)
    (root / paths[5]).chmod(0o4755)
    (root / paths[6]).chmod(0o400)
    if IS_ROOT:
        os.chown(root / paths[7], OTHER_UID, OTHER_GID)
        os.chown(root / "d3", OTHER_UID, OTHER_GID)
    return paths


def change_files(root: Path, paths: list[str], every: int, salt: bytes) -> list[str]:
    """Rewrite every ``every``-th file (new content; some keep their size); the changed paths."""
    changed = paths[::every]
    for number, relative in enumerate(changed):
        path = root / relative
        old = path.read_bytes()
        new = hashlib.sha256(salt + old).digest() * (len(old) // 32 + 1)
        path.write_bytes(new[: len(old)] if number % 2 else new + salt)
    return changed


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def describe(root: Path) -> Description:
    """Every path under ``root`` (root itself as ".") with all that a restore must bring back;
    names sharing an inode are told by the smallest of them."""
    paths = {".": root}
    for directory, names, files in os.walk(root):
        for name in [*names, *files]:
            path = Path(directory) / name
            paths[str(path.relative_to(root))] = path
    inodes: dict[int, str] = {}
    for relative in sorted(paths, reverse=True):
        inodes[paths[relative].lstat().st_ino] = relative
    result: Description = {}
    for relative, path in paths.items():
        status = path.lstat()
        mode = status.st_mode
        common = (stat.S_IMODE(mode), status.st_uid, status.st_gid, status.st_mtime_ns)
        if stat.S_ISLNK(mode):
            result[relative] = ("symlink", str(path.readlink()), status.st_uid, status.st_gid)
        elif stat.S_ISDIR(mode):
            result[relative] = ("dir", *common)
        else:
            group = inodes[status.st_ino]
            result[relative] = ("file", *common, status.st_size, sha256(path), group)
    return result


def contents(root: Path) -> list[str]:
    """The sha256 of every regular file under ``root``, sorted (a multiset of contents)."""
    return sorted(
        sha256(Path(directory) / name)
        for directory, _, names in os.walk(root)
        for name in names
        if stat.S_ISREG((Path(directory) / name).lstat().st_mode)
    )
