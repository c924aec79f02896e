"""Real directory trees for the snapshot and sync tests: building them, changing a share of their
files, and describing them completely enough that two descriptions are equal only when the trees
are (content, kind, mode, owner, mtime, symlink target, which names share an inode)."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
from pathlib import Path

from specivod.adapters.backup.snapshot import Previous, SnapshotSummary, take_snapshot

IS_ROOT = os.geteuid() == 0
OTHER_UID, OTHER_GID = 4321, 8765
MIB = 1 << 20

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


def two_snapshots(tmp_path: Path) -> tuple[list[str], Description]:
    """Snapshot, change 1 %, snapshot again, delete the first: the paths and the second's state."""
    paths, description, _ = snapshots_of(tmp_path / "data", tmp_path)
    return paths, description


def snapshots_of(
    data: Path, backups: Path
) -> tuple[list[str], Description, tuple[SnapshotSummary, SnapshotSummary]]:
    """``two_snapshots`` with the data dir and the snapshots where given; both summaries too."""
    paths = build_tree(data)
    (data / "links").mkdir()
    (data / "links" / "passwd").symlink_to("/etc/passwd")
    (data / "links" / "out").symlink_to("../../outside")
    os.link(data / paths[0], data / "links" / "hard")
    with (data / "sparse.img").open("wb") as stream:
        stream.truncate(32 * MIB)
        stream.seek(8 * MIB)
        stream.write(b"data in the middle")
    one = take_snapshot(data, backups / "one", backups / "one.index", None)
    change_files(data, paths, every=100, salt=b"release 2")
    two = take_snapshot(
        data,
        backups / "two",
        backups / "two.index",
        Previous(backups / "one", backups / "one.index"),
    )
    assert two.files_copied == 10
    shutil.rmtree(backups / "one")
    return paths, describe(data), (one, two)


def failed_release(data: Path, paths: list[str]) -> list[str]:
    """What a failed release does to the data dir; the sha256 of every file content it replaced
    or added, which a restore must keep aside."""
    change_files(data, paths, every=97, salt=b"failed release")
    (data / paths[500]).unlink()
    (data / paths[501]).chmod(0o666)
    (data / "new-dir" / "deep").mkdir(parents=True)
    (data / "new-dir" / "deep" / "upload").write_bytes(b"added by the failed release")
    (data / "d4" / "added.txt").write_bytes(b"added too")
    (data / "links" / "passwd").unlink()
    (data / "links" / "passwd").symlink_to("/etc/shadow")
    shutil.rmtree(data / "d1" / "empty")
    (data / "d1" / "empty").write_bytes(b"a file where a directory was")
    (data / "d5").chmod(0o777)
    if IS_ROOT:
        os.chown(data / paths[502], OTHER_UID, OTHER_GID)
    with (data / "sparse.img").open("r+b") as stream:
        stream.seek(16 * MIB)
        stream.write(b"more")
    return contents(data)


def snap(
    tmp_path: Path,
    name: str,
    previous: str | None = None,
    workers: int | None = None,
    *,
    checksum: bool = False,
) -> SnapshotSummary:
    """Snapshot ``tmp_path``/data into ``tmp_path``/``name`` (and ``name``.index) against the
    snapshot ``previous`` there; ``workers``: how many worker processes (None: as many as pay)."""
    earlier = None
    if previous is not None:
        earlier = Previous(tmp_path / previous, tmp_path / f"{previous}.index")
    return take_snapshot(
        tmp_path / "data",
        tmp_path / name,
        tmp_path / f"{name}.index",
        earlier,
        checksum=checksum,
        workers=workers,
    )
