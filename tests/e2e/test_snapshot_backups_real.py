"""Snapshot backups on the real stack, with the deployment, its data dir and the backups on a
loop-mounted XFS image (reflinks): ``specivod backup`` copies only what changed since the last
snapshot, every snapshot stands alone once the one before is deleted, and ``specivod restore``
(also when SIGKILLed mid-sync and finished by ``recover``, and as an upgrade's rollback) brings
back every file exactly, changing only what differs and keeping what it replaced aside.
Needs root (mount); never skipped."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.config import specivod_config, write_config
from sandbox.deployment import SandboxDeployment, create_deployment
from sandbox.releases import BASELINE, MIGRATES_THEN_FAILS
from tests.conftest import Specivod, Stack
from tests.support.xfs import mounted_xfs, shared

pytestmark = pytest.mark.stack

FILES = 2000
BASE_NS = 1_650_000_000_123_456_789
MODES = (0o600, 0o640, 0o644, 0o400, 0o664)
OWNERS = ((0, 0), (999, 999), (1001, 1002))
MIB = 1 << 20
MARKER = b"outside the data dir: no backup may hold this line\n"
Description = dict[str, tuple[object, ...]]


@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_xfs(tmp_path, 2 << 30) as mount_point:
        yield mount_point


@pytest.fixture
def on_xfs(stack: Stack, xfs: Path) -> Iterator[SandboxDeployment]:
    created = create_deployment(xfs, stack.images)
    try:
        yield created
    finally:
        created.down()


@pytest.fixture
def cli(on_xfs: SandboxDeployment, xfs: Path, tmp_path: Path) -> Specivod:
    config = specivod_config(on_xfs, tmp_path, backup={"dir": str(xfs / "backups")})
    return Specivod(write_config(tmp_path / "specivod.toml", config))


def populate(data: Path, outside: Path) -> list[str]:
    """``FILES`` files in nested dirs with varied modes, owners and nanosecond mtimes; an empty
    dir, a sparse file, a symlink out of the data dir, one inside, a hard link."""
    rng = random.Random(10)
    paths = []
    for number in range(FILES):
        relative = f"uploads/u{number % 10}/p{number % 6}/q{number % 4}/file-{number:05d}.bin"
        path = data / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randrange(0, 16384)))
        path.chmod(MODES[number % len(MODES)])
        os.chown(path, *OWNERS[number % len(OWNERS)])
        os.utime(path, ns=(BASE_NS + number * 1_000_003, BASE_NS + number * 1_000_003))
        paths.append(relative)
    (data / "uploads" / "u3").chmod(0o750)
    os.chown(data / "uploads" / "u3", 999, 999)
    (data / "uploads" / "u1" / "empty").mkdir()
    with (data / "sparse.img").open("wb") as stream:
        stream.truncate(64 * MIB)
        stream.seek(8 * MIB)
        stream.write(b"data in the middle")
    (data / "links").mkdir()
    (data / "links" / "outside").symlink_to(outside)
    (data / "links" / "inside").symlink_to(f"../{paths[9]}")
    os.link(data / paths[0], data / "links" / "hard")
    return paths


def rewrite(data: Path, paths: list[str], salt: bytes) -> None:
    """New content in place (the same inode); every other one keeps its size."""
    for number, relative in enumerate(paths):
        path = data / relative
        old = path.read_bytes()
        new = hashlib.sha256(salt + old).digest() * (len(old) // 32 + 1)
        path.write_bytes(new[: len(old)] if number % 2 else new + salt)


def failed_release(deployment: SandboxDeployment, paths: list[str], every: int, away: Path) -> None:
    """What a failed release does to the rows and the data dir."""
    deployment.psql("UPDATE issues SET title = 'failed ' || id WHERE id % 3 = 0")
    deployment.psql("DELETE FROM issues WHERE id > 150")
    data = deployment.data_dir
    live = [path for path in paths if (data / path).exists()]
    rewrite(data, [live[0], *live[50::every]], b"failed release")  # live[0]: the hard link
    (data / live[3]).unlink()
    (data / live[4]).unlink()
    (data / live[5]).chmod(0o666)
    os.chown(data / live[6], 1001, 1002)
    os.utime(data / live[7], ns=(BASE_NS, BASE_NS))
    (data / "new-dir" / "deep").mkdir(parents=True)
    (data / "new-dir" / "deep" / "upload").write_bytes(b"added by the failed release")
    (data / "uploads" / "u2" / "added.txt").write_bytes(b"added too")
    (data / "links" / "outside").unlink()
    (data / "links" / "outside").symlink_to(away)
    (data / "uploads" / "u1" / "empty").rmdir()
    (data / "uploads" / "u1" / "empty").write_bytes(b"a file where a directory was")
    (data / "uploads" / "u5").chmod(0o777)
    with (data / "sparse.img").open("r+b") as stream:
        stream.seek(16 * MIB)
        stream.write(b"more")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def walk(root: Path) -> dict[str, Path]:
    found = {".": root}
    for directory, names, files in os.walk(root):
        for name in [*names, *files]:
            path = Path(directory) / name
            found[str(path.relative_to(root))] = path
    return found


def describe(root: Path) -> Description:
    """Every path with its kind, mode, owner, mtime (ns), content or target, link count, and the
    first name of its inode: equal only for trees a restore made exactly alike."""
    paths = walk(root)
    first_name = {paths[name].lstat().st_ino: name for name in sorted(paths, reverse=True)}
    result: Description = {}
    for name, path in paths.items():
        status = path.lstat()
        owner = (stat.S_IMODE(status.st_mode), status.st_uid, status.st_gid, status.st_mtime_ns)
        if stat.S_ISLNK(status.st_mode):
            result[name] = ("symlink", str(path.readlink()), *owner[1:])
        elif stat.S_ISDIR(status.st_mode):
            result[name] = ("dir", *owner)
        else:
            group = first_name[status.st_ino]
            result[name] = ("file", *owner, sha256(path), status.st_nlink, group)
    return result


def files_in(root: Path) -> dict[str, str]:
    """Regular files under ``root`` and their sha256."""
    return {
        name: sha256(path)
        for name, path in walk(root).items()
        if stat.S_ISREG(path.lstat().st_mode)
    }


def holds_marker(root: Path) -> list[str]:
    """Regular files under ``root`` (links not followed) holding the outside file's line."""
    return [
        name
        for name, path in walk(root).items()
        if stat.S_ISREG(path.lstat().st_mode) and MARKER in path.read_bytes()
    ]


def run(cli: Specivod, *arguments: str, code: int = 0) -> str:
    result = cli(*arguments)
    assert result.returncode == code, f"{arguments}: {result.stdout}\n{result.stderr}"
    return result.stdout


def backup(cli: Specivod) -> dict[str, Any]:
    """``specivod backup``; the new backup's manifest as ``backups --json`` lists it."""
    before = {b["id"] for b in json.loads(run(cli, "backups", "--json"))["backups"]}
    run(cli, "backup")
    listed = json.loads(run(cli, "backups", "--json"))["backups"]
    (new,) = [b for b in listed if b["id"] not in before]
    assert new["valid"] and new["data_dir"]["format"] == "snapshot"
    return dict(new)


def transaction(cli: Specivod) -> dict[str, Any]:
    (only,) = json.loads(run(cli, "history", "--json"))["transactions"]
    return dict(only)


def outside_files(xfs: Path) -> tuple[Path, Path]:
    (xfs / "outside").mkdir()
    marker, away = xfs / "outside" / "marker.txt", xfs / "outside" / "elsewhere.txt"
    marker.write_bytes(MARKER)
    away.write_bytes(MARKER + b"elsewhere\n")
    return marker, away


def differing(failed: Description, expected: Description) -> set[str]:
    """Non-directory paths of the failed state that the snapshot has otherwise or not at all."""
    return {
        name for name, entry in failed.items() if entry[0] != "dir" and entry != expected.get(name)
    }


def assert_kept_aside(aside: Path, failed: Description, expected: Description, data: Path) -> None:
    """Exactly what differed went aside (not the whole data dir), each with its failed content;
    nothing the failed release wrote is lost."""
    moved = differing(failed, expected)
    assert {
        name for name, path in walk(aside).items() if not path.is_dir() or path.is_symlink()
    } == moved
    for name in moved:
        if failed[name][0] == "file":
            assert sha256(aside / name) == failed[name][5], name
        else:
            assert str((aside / name).readlink()) == failed[name][1], name
    written = Counter(str(entry[5]) for entry in failed.values() if entry[0] == "file")
    kept = Counter(files_in(data).values()) + Counter(files_in(aside).values())
    assert not written - kept, "content the failed release wrote was lost"


def test_second_snapshot_copies_what_changed_and_restores_exactly_without_the_first(
    on_xfs: SandboxDeployment, cli: Specivod, xfs: Path
) -> None:
    data = on_xfs.data_dir
    marker, away = outside_files(xfs)
    paths = populate(data, marker)
    first = backup(cli)
    assert first["data_dir"]["files_copied"] == first["data_dir"]["reflinked"] > FILES

    changed = paths[10::100]
    rewrite(data, changed, b"release 2")
    added = [f"uploads/new/added-{number}.bin" for number in range(5)]
    (data / "uploads" / "new").mkdir()
    for name in added:
        (data / name).write_bytes(os.urandom(5000))
    for name in paths[1::400]:
        (data / name).unlink()
    second = backup(cli)
    snapshot = second["data_dir"]
    assert snapshot["base"] == first["id"]
    assert snapshot["files_copied"] == snapshot["reflinked"] == len(changed) + len(added) == 25
    assert snapshot["bytes_copied"] == sum((data / name).stat().st_size for name in changed + added)
    assert snapshot["files_linked"] >= FILES - len(changed) - 5
    tree = xfs / "backups" / second["id"] / snapshot["tree"]
    assert shared(tree / changed[1])  # reflinked from the live file
    assert (tree / "links" / "outside").readlink() == marker
    assert holds_marker(xfs / "backups") == []

    shutil.rmtree(xfs / "backups" / first["id"])  # retention, as it would
    expected, rows = describe(data), on_xfs.table_checksum()
    inodes = {name: path.lstat().st_ino for name, path in walk(data).items()}
    failed_release(on_xfs, paths, 97, away)
    failed = describe(data)
    assert failed != expected and on_xfs.table_checksum() != rows

    run(cli, "restore", second["id"])

    assert describe(data) == expected
    assert on_xfs.table_checksum() == rows
    assert data.lstat().st_ino == inodes["."], "the data dir was swapped, not synced"
    moved = differing(failed, expected)
    kept_inode = [name for name in expected if name in failed and name not in moved]
    now = walk(data)
    assert [name for name in kept_inode if now[name].lstat().st_ino != inodes[name]] == []
    assert (data / "sparse.img").stat().st_blocks * 512 < MIB
    assert marker.read_bytes() == MARKER and away.read_bytes() == MARKER + b"elsewhere\n"
    assert holds_marker(xfs / "backups") == []

    done = transaction(cli)
    assert (done["kind"], done["state"], done["restored"]) == ("restore", "rolled_back", True)
    aside = Path(done["data_aside"])
    assert aside.parent == data.parent and aside.name.startswith("data.replaced-")
    assert_kept_aside(aside, failed, expected, data)
    listed = json.loads(run(cli, "backups", "--json"))["set_aside"]
    size = sum(
        path.lstat().st_size for path in walk(aside).values() if stat.S_ISREG(path.lstat().st_mode)
    )
    assert {"path": str(aside), "size": size} in [
        {"path": tree["path"], "size": tree["size"]} for tree in listed
    ]
    assert str(aside) in run(cli, "backups")


def test_restore_killed_in_the_sync_is_finished_by_recover(
    on_xfs: SandboxDeployment, cli: Specivod, xfs: Path
) -> None:
    data = on_xfs.data_dir
    marker, away = outside_files(xfs)
    paths = populate(data, marker)
    taken = backup(cli)
    expected, rows = describe(data), on_xfs.table_checksum()
    failed_release(on_xfs, paths, 29, away)
    failed = describe(data)
    assert len(differing(failed, expected)) > 60

    killed = cli("restore", taken["id"], crash_after="SYNC:30")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    middle = describe(data)
    assert middle not in (failed, expected), "the kill did not land in the middle of the sync"
    assert transaction(cli)["state"] == "restoring"

    run(cli, "recover")

    done = transaction(cli)
    assert (done["state"], done["restored"]) == ("rolled_back", True)
    assert describe(data) == expected
    assert on_xfs.table_checksum() == rows
    assert on_xfs.running_version() == BASELINE
    assert_kept_aside(Path(done["data_aside"]), failed, expected, data)


def test_upgrade_that_migrates_then_fails_restores_the_data_dir_exactly(
    on_xfs: SandboxDeployment, cli: Specivod, xfs: Path
) -> None:
    data = on_xfs.data_dir
    marker, _ = outside_files(xfs)
    populate(data, marker)
    expected, rows = describe(data), on_xfs.table_checksum()

    run(cli, "upgrade", "--now", "--to", MIGRATES_THEN_FAILS, code=1)

    done = transaction(cli)
    assert (done["kind"], done["state"], done["restored"]) == ("upgrade", "rolled_back", True)
    assert describe(data) == expected
    assert on_xfs.table_checksum() == rows
    assert on_xfs.running_version() == BASELINE
    aside = Path(done["data_aside"])
    assert (aside / "FORMAT").read_text() == f"format 3, written by {MIGRATES_THEN_FAILS}\n"
    assert (aside / "attachments" / "file1.txt").read_text().endswith("converted\n")
    assert set(files_in(aside)) == {"FORMAT", *(f"attachments/file{n}.txt" for n in range(1, 6))}
    assert holds_marker(xfs / "backups") == []
