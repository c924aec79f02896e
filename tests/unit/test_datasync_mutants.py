"""What mutation testing of datasync found untested, one test per safety rule a surviving mutant
broke: the room the plan reports for setting aside out of a mount point; what ``checksum`` and
``check_sources`` read; nothing live deleted (the app's own ``.tmp`` files, a failed ``cp``);
what is replaced kept aside under a free name, never merged into an earlier set-aside, and its
directory fsynced; hard links brought back as links and parted where a release linked files;
symlinks never followed (in the data dir, as the data dir, in the snapshot). Out of a mount point
a rename fails with EXDEV; here a fake rename does. Small real trees: a mutant is judged in
seconds."""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from specivod.adapters.backup import datasync
from specivod.adapters.backup.datasync import (
    SyncSummary,
    check_sources,
    plan_sync,
    sync_from_snapshot,
)
from specivod.adapters.backup.snapshot import take_snapshot
from specivod.domain.errors import BackupError
from tests.unit.snapshot_kit import describe

Rename = Callable[[str, str], None]


class Tree:
    """A data dir of four files, its snapshot, and the ``replaced`` path beside it."""

    def __init__(self, tmp_path: Path) -> None:
        self.data, self.replaced = tmp_path / "data", tmp_path / "data.replaced"
        self.snap, self.index = tmp_path / "snap", tmp_path / "snap.index"
        for relative, size in (("a.bin", 100), ("sub/b.bin", 200), ("sub/c.bin", 300)):
            path = self.data / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes([size % 251]) * size)
            os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
        (self.data / "link").symlink_to("a.bin")
        take_snapshot(self.data, self.snap, self.index, None)
        self.expected = describe(self.data)

    def fail_release(self) -> None:
        """Rewrite a.bin (1000 bytes), add a tree new/ of 700 bytes and a file z of 50."""
        (self.data / "a.bin").write_bytes(b"r" * 1000)
        (self.data / "new" / "deep").mkdir(parents=True)
        (self.data / "new" / "x").write_bytes(b"x" * 300)
        (self.data / "new" / "deep" / "y").write_bytes(b"y" * 400)
        (self.data / "z").write_bytes(b"z" * 50)

    def plan(self, *, checksum: bool | None = None) -> datasync.SyncPlan:
        if checksum is None:
            return plan_sync(self.snap, self.index, self.data)
        return plan_sync(self.snap, self.index, self.data, checksum=checksum)

    def sync(self) -> datasync.SyncSummary:
        return sync_from_snapshot(self.snap, self.index, self.data, self.replaced)

    def record_wrong_sha256(self, relative: str) -> None:
        """The index says ``relative`` has other content, while every stat of it agrees."""
        with gzip.open(self.index, "rt") as stream:
            header, *lines = stream.read().splitlines()
        records = [json.loads(line) for line in lines]
        for record in records:
            if record["p"] == relative:
                record["h"] = "0" * 64
        with gzip.open(self.index, "wt") as stream:
            for line in [header, *(json.dumps(r, separators=(",", ":")) for r in records)]:
                stream.write(line + "\n")


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


def cross_device(monkeypatch: pytest.MonkeyPatch, tree: Tree) -> None:
    """Every rename into ``replaced`` fails as it does out of a mount point."""
    real: Rename = os.rename

    def rename(source: str, target: str) -> None:
        if str(target).startswith(f"{tree.replaced}/"):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), source)
        real(source, target)

    monkeypatch.setattr(os, "rename", rename)


def fake_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, script: str) -> None:
    """``name`` on the PATH is the shell script ``script``."""
    fakes = tmp_path / "bin"
    fakes.mkdir(exist_ok=True)
    (fakes / name).write_text(f"#!/bin/sh\n{script}\n")
    (fakes / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fakes}:{os.environ['PATH']}")


def test_the_plan_counts_what_setting_aside_copies_out_of_a_mount_point(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree.fail_release()
    assert tree.plan().bytes_set_aside_elsewhere == 0  # a rename: nothing copied
    monkeypatch.setattr(Path, "is_mount", lambda path: path == tree.data)
    plan = tree.plan()
    assert plan.bytes_set_aside_elsewhere == 1000 + 300 + 400 + 50  # files only, no dir sizes
    assert (plan.files_to_copy, plan.bytes_to_copy, plan.paths_to_set_aside) == (1, 100, 3)


def test_a_missing_data_dir_is_no_mount_point(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Path, "is_mount", lambda path: True)
    shutil.rmtree(tree.data)
    assert tree.plan().bytes_set_aside_elsewhere == 0


def test_checksum_alone_compares_content_that_every_stat_agrees_on(tree: Tree) -> None:
    tree.record_wrong_sha256("sub/b.bin")
    assert tree.plan().files_to_copy == 0  # quick: untouched since the snapshot (inode, ctime)
    assert tree.plan(checksum=False).files_to_copy == 0
    assert tree.plan(checksum=True).files_to_copy == 1
    check_sources(tree.snap, tree.index, tree.data)
    with pytest.raises(BackupError, match=r"sub/b\.bin is corrupt"):
        check_sources(tree.snap, tree.index, tree.data, checksum=True)
    assert (tree.sync().copied, describe(tree.data)) == (0, tree.expected)
    with pytest.raises(BackupError, match=r"sub/b\.bin does not match its sha256"):
        sync_from_snapshot(tree.snap, tree.index, tree.data, tree.replaced, checksum=True)
    assert (tree.data / "sub" / "b.bin").read_bytes() == bytes([200]) * 200


def test_check_sources_reads_only_what_a_sync_would_copy_and_reports_it(tree: Tree) -> None:
    (tree.snap / "sub" / "c.bin").chmod(0o600)
    (tree.snap / "sub" / "c.bin").write_bytes(b"\0" * 300)  # damaged, but the live one is right
    (tree.data / "a.bin").write_bytes(b"r" * 1000)
    read: list[int] = []
    check_sources(tree.snap, tree.index, tree.data, done=read.append)
    assert sum(read) == 100  # the snapshot's a.bin, nothing else


def test_a_snapshot_file_that_cannot_be_read_is_named(tree: Tree) -> None:
    (tree.data / "a.bin").write_bytes(b"r" * 1000)
    (tree.snap / "a.bin").unlink()
    with pytest.raises(BackupError, match=r"cannot read .*/snap/a\.bin: .*No such file"):
        check_sources(tree.snap, tree.index, tree.data)


def test_a_set_aside_on_one_file_system_is_a_rename(tree: Tree) -> None:
    tree.fail_release()
    inodes = {name: (tree.data / name).lstat().st_ino for name in ("a.bin", "new", "z")}
    summary = tree.sync()
    assert summary == SyncSummary(
        copied=1, bytes_copied=100, set_aside=3, unchanged=5, metadata_fixed=1
    )  # unchanged: ".", sub, sub/b.bin, sub/c.bin, link; fixed: the mtime of "."
    assert describe(tree.data) == tree.expected
    assert {name: (tree.replaced / name).lstat().st_ino for name in inodes} == inodes


def test_out_of_a_mount_point_a_set_aside_is_copied_then_removed(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree.fail_release()
    cross_device(monkeypatch, tree)
    summary = tree.sync()
    assert describe(tree.data) == tree.expected
    assert summary.set_aside == 3
    assert (tree.replaced / "a.bin").read_bytes() == b"r" * 1000
    assert (tree.replaced / "new" / "deep" / "y").read_bytes() == b"y" * 400
    assert (tree.replaced / "new" / "x").read_bytes() == b"x" * 300
    assert (tree.replaced / "z").read_bytes() == b"z" * 50


def test_a_failed_copy_out_of_a_mount_point_removes_nothing_live(
    tree: Tree, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tree.data / "a.bin").write_bytes(b"r" * 1000)
    cross_device(monkeypatch, tree)
    fake_command(tmp_path, monkeypatch, "cp", r"printf 'cp: no room \377\n' >&2; exit 1")
    with pytest.raises(BackupError) as failed:
        tree.sync()
    assert str(failed.value) == (
        f"cannot set {tree.data}/a.bin aside in {tree.replaced}: cp: no room \ufffd"
    )
    assert (tree.data / "a.bin").read_bytes() == b"r" * 1000


def test_a_tree_copied_out_of_a_mount_point_that_cannot_be_removed_is_reported(
    tree: Tree, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tree.fail_release()
    cross_device(monkeypatch, tree)
    fake_command(tmp_path, monkeypatch, "rm", "exit 1")
    with pytest.raises(BackupError, match=r"cannot remove .*/data/new after setting it aside"):
        tree.sync()
    assert (tree.replaced / "new" / "deep" / "y").read_bytes() == b"y" * 400
    assert stat.S_ISDIR((tree.data / "new").lstat().st_mode)


def test_removing_a_tree_copied_out_of_a_mount_point_stays_on_its_file_system(
    tree: Tree, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tree.fail_release()
    cross_device(monkeypatch, tree)
    arguments, real_rm = tmp_path / "rm-arguments", shutil.which("rm")
    fake_command(
        tmp_path, monkeypatch, "rm", f'printf "%s\\n" "$@" >> {arguments}; exec {real_rm} "$@"'
    )
    tree.sync()
    assert describe(tree.data) == tree.expected
    told = arguments.read_text().splitlines()
    assert "--one-file-system" in told  # a mount inside the set-aside tree is left alone
    assert told[-1] == f"{tree.data}/new"


def test_a_file_whose_name_is_not_utf8_is_brought_back(tmp_path: Path) -> None:
    data, name = tmp_path / "data", os.fsdecode(b"caf\xe9.bin")
    data.mkdir()
    (data / name).write_bytes(b"snapshot")
    take_snapshot(data, tmp_path / "snap", tmp_path / "snap.index", None)
    expected = describe(data)
    (data / name).write_bytes(b"failed release")
    sync_from_snapshot(tmp_path / "snap", tmp_path / "snap.index", data, tmp_path / "aside")
    assert describe(data) == expected
    assert (tmp_path / "aside" / name).read_bytes() == b"failed release"


def test_the_replaced_tree_is_never_the_root(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="not beside"):
        sync_from_snapshot(
            tmp_path / "snap", tmp_path / "no-index", Path("/specivod-no-such-dir"), Path("/")
        )


def test_a_data_dir_whose_parent_is_missing_too_is_created(tree: Tree) -> None:
    data, replaced = tree.data.parent / "new-host" / "data", tree.data.parent / "new-host" / "aside"
    sync_from_snapshot(tree.snap, tree.index, data, replaced)
    assert describe(data) == tree.expected


def test_each_rename_and_each_byte_copied_is_told(tree: Tree) -> None:
    tree.fail_release()
    steps: list[tuple[str, str]] = []
    copied: list[int] = []
    sync_from_snapshot(
        tree.snap,
        tree.index,
        tree.data,
        tree.replaced,
        done=copied.append,
        step=lambda what, path: steps.append((what, path)),
    )
    assert sorted(steps) == [
        ("placed", "a.bin"),
        ("set-aside", "a.bin"),
        ("set-aside", "new"),
        ("set-aside", "z"),
    ]
    assert sum(copied) == 100


def test_a_failure_on_the_way_names_the_data_dir(tree: Tree) -> None:
    not_a_dir = tree.data.parent / "file"
    not_a_dir.write_bytes(b"")
    with pytest.raises(BackupError, match=r"cannot bring .*/file back to the snapshot: "):
        sync_from_snapshot(tree.snap, tree.index, not_a_dir, tree.data.parent / "aside")


def test_symlinks_put_where_the_snapshot_has_a_directory_or_file_are_never_followed(
    tree: Tree, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "dir" / "b.bin").write_bytes(b"not the app's")
    (outside / "dir" / "precious").write_bytes(b"not the app's either")
    (outside / "file").write_bytes(b"someone else's")
    before = describe(outside)
    shutil.rmtree(tree.data / "sub")
    (tree.data / "sub").symlink_to(outside / "dir")
    (tree.data / "a.bin").unlink()
    (tree.data / "a.bin").symlink_to(outside / "file")
    tree.sync()
    assert describe(tree.data) == tree.expected
    assert describe(outside) == before
    assert (tree.replaced / "sub").readlink() == outside / "dir"
    assert (tree.replaced / "a.bin").readlink() == outside / "file"


def test_a_data_dir_that_is_a_symlink_to_a_directory_is_synced_in_place(
    tree: Tree, tmp_path: Path
) -> None:
    tree.fail_release()
    link = tmp_path / "data-link"
    link.symlink_to(tree.data)
    sync_from_snapshot(tree.snap, tree.index, link, tmp_path / "aside")
    assert link.is_symlink()
    assert describe(tree.data) == tree.expected
    assert (tmp_path / "aside" / "a.bin").read_bytes() == b"r" * 1000


def test_only_this_modules_temp_files_are_removed_the_apps_are_set_aside_or_kept(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "cache.tmp").write_bytes(b"the app's, in the snapshot")
    take_snapshot(data, tmp_path / "snap", tmp_path / "snap.index", None)
    expected = describe(data)
    (data / "upload.tmp").write_bytes(b"the app's, added since")
    (data / f"{datasync.TEMP_PREFIX}notes").write_bytes(b"the app's, named oddly")
    (data / "sub" / "added").write_bytes(b"added in a directory the snapshot has")
    (data / "sub" / datasync.temp_name("x")).write_bytes(b"half a copy of a killed run")
    sync_from_snapshot(tmp_path / "snap", tmp_path / "snap.index", data, tmp_path / "aside")
    assert describe(data) == expected
    assert sorted(
        str(p.relative_to(tmp_path / "aside")) for p in (tmp_path / "aside").rglob("*")
    ) == [
        f"{datasync.TEMP_PREFIX}notes",
        "sub",
        "sub/added",
        "upload.tmp",
    ]


def test_a_file_is_copied_to_a_temp_name_beside_its_target(tree: Tree) -> None:
    (tree.data / "sub" / "b.bin").write_bytes(b"r" * 1000)
    seen: list[list[str]] = []
    modes: list[int] = []

    def copying(_: int) -> None:
        seen.append(sorted(path.name for path in (tree.data / "sub").iterdir()))
        modes.append(stat.S_IMODE((tree.data / "sub" / datasync.temp_name("b.bin")).stat().st_mode))

    sync_from_snapshot(tree.snap, tree.index, tree.data, tree.replaced, done=copying)
    assert seen == [sorted(["b.bin", "c.bin", datasync.temp_name("b.bin")])]
    assert modes == [0o600]  # a half-made copy is nobody else's to read
    assert describe(tree.data) == tree.expected


def test_a_symlink_is_put_back_with_its_own_times_and_its_target_untouched(tree: Tree) -> None:
    link, target = tree.data / "link", tree.data / "a.bin"
    times = (link.lstat().st_mtime_ns, target.lstat().st_mtime_ns)
    link.unlink()
    link.symlink_to("sub/b.bin")
    tree.sync()
    assert describe(tree.data) == tree.expected
    assert (link.lstat().st_mtime_ns, target.lstat().st_mtime_ns) == times


def test_the_directory_a_path_is_set_aside_into_is_synced(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tree.data / "sub" / "added").write_bytes(b"added since")
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(str(Path(f"/proc/self/fd/{descriptor}").readlink()))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    tree.sync()
    assert (tree.replaced / "sub" / "added").read_bytes() == b"added since"
    assert {f"{tree.replaced}/sub", f"{tree.replaced}", f"{tree.data}/sub"} <= set(synced)
    assert str(tree.replaced.parent) in synced  # where the replaced tree was made
    directories = [path for path in synced if Path(path).is_dir()]
    assert directories == sorted(directories, key=len, reverse=True)  # innermost first


def test_a_directory_already_in_the_replaced_tree_is_reused(tree: Tree) -> None:
    (tree.replaced / "sub").mkdir(parents=True)
    (tree.replaced / "sub" / "earlier").write_bytes(b"set aside by an earlier run")
    (tree.data / "sub" / "added").write_bytes(b"added since")
    tree.sync()
    assert sorted(path.name for path in (tree.replaced / "sub").iterdir()) == ["added", "earlier"]


def test_a_symlink_with_another_target_differs_even_with_the_same_times(tree: Tree) -> None:
    link = tree.data / "link"
    status = link.lstat()
    link.unlink()
    link.symlink_to("sub/c.bin")
    os.utime(link, ns=(status.st_atime_ns, status.st_mtime_ns), follow_symlinks=False)
    tree.sync()
    assert describe(tree.data) == tree.expected
    assert str((tree.replaced / "link").readlink()) == "sub/c.bin"


def test_hard_links_are_brought_back_as_links_and_their_set_aside_copy_is_apart(
    tmp_path: Path,
) -> None:
    data, snap, index, aside = (tmp_path / name for name in ("data", "snap", "index", "aside"))
    data.mkdir()
    (data / "one").write_bytes(b"snapshot")
    os.link(data / "one", data / "two")
    (data / "three").write_bytes(b"alone")
    (data / "four").write_bytes(b"a second group")
    os.link(data / "four", data / "five")
    take_snapshot(data, snap, index, None)
    expected = describe(data)
    assert sync_from_snapshot(snap, index, data, aside).copied == 0
    (data / "one").write_bytes(b"failed release")  # in place: "two" changes with it
    summary = sync_from_snapshot(snap, index, data, aside)
    assert describe(data) == expected
    assert (summary.copied, summary.bytes_copied, summary.set_aside) == (2, 8, 2)
    assert (aside / "one").read_bytes() == (aside / "two").read_bytes() == b"failed release"
    assert (aside / "one").stat().st_ino != (data / "one").stat().st_ino
    again = sync_from_snapshot(snap, index, data, aside)
    assert (again.copied, again.set_aside, again.unchanged) == (0, 0, 6)


def test_files_a_failed_release_hard_linked_together_are_parted(tmp_path: Path) -> None:
    data, snap, index, aside = (tmp_path / name for name in ("data", "snap", "index", "aside"))
    data.mkdir()
    for name in ("f", "g"):
        (data / name).write_bytes(b"same content")
        os.utime(data / name, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    take_snapshot(data, snap, index, None)
    expected = describe(data)
    (data / "g").unlink()
    os.link(data / "f", data / "g")
    sync_from_snapshot(snap, index, data, aside)
    assert describe(data) == expected
    assert (data / "f").stat().st_ino != (data / "g").stat().st_ino


def test_a_file_whose_mode_alone_changed_is_brought_back(tree: Tree) -> None:
    (tree.data / "sub" / "c.bin").chmod(0o666)
    assert tree.sync().copied == 1
    assert describe(tree.data) == tree.expected


def test_a_taken_name_in_the_replaced_tree_is_never_merged_into(tree: Tree) -> None:
    (tree.replaced / "new").mkdir(parents=True)
    (tree.replaced / "new" / "x").write_bytes(b"set aside by an earlier run")
    (tree.replaced / "a.bin").mkdir()
    tree.fail_release()
    tree.sync()
    assert (tree.replaced / "new" / "x").read_bytes() == b"set aside by an earlier run"
    assert (tree.replaced / "new~1" / "x").read_bytes() == b"x" * 300
    assert (tree.replaced / "a.bin~1").read_bytes() == b"r" * 1000


def test_content_written_in_place_with_the_mtime_put_back_is_found(tree: Tree) -> None:
    live = tree.data / "sub" / "b.bin"
    status = live.stat()
    live.write_bytes(b"w" * 200)
    os.utime(live, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert tree.sync().copied == 1
    assert describe(tree.data) == tree.expected


def test_a_snapshot_file_replaced_by_a_symlink_is_not_followed(tree: Tree, tmp_path: Path) -> None:
    (tmp_path / "lookalike").write_bytes((tree.snap / "a.bin").read_bytes())
    (tree.snap / "a.bin").unlink()
    (tree.snap / "a.bin").symlink_to(tmp_path / "lookalike")
    (tree.data / "a.bin").write_bytes(b"r" * 1000)
    with pytest.raises(BackupError, match=r"the snapshot's a\.bin cannot be read: "):
        tree.sync()
    assert (tree.data / "a.bin").read_bytes() == b"r" * 1000


def test_names_taken_twice_in_the_replaced_tree_get_the_next_free_variant(tree: Tree) -> None:
    tree.replaced.mkdir()
    for taken in ("a.bin", "a.bin~1"):
        (tree.replaced / taken).write_bytes(b"set aside by an earlier run")
    (tree.data / "a.bin").write_bytes(b"r" * 1000)
    (tree.data / "sub" / "b.bin").write_bytes(b"r" * 1000)
    summary = tree.sync()
    assert (summary.copied, summary.bytes_copied) == (2, 300)
    assert (tree.replaced / "a.bin~2").read_bytes() == b"r" * 1000
    assert describe(tree.data) == tree.expected


def test_a_directory_where_the_snapshot_has_a_file_is_set_aside(tree: Tree) -> None:
    (tree.data / "sub" / "c.bin").unlink()
    (tree.data / "sub" / "c.bin" / "inner").mkdir(parents=True)
    (tree.data / "sub" / "c.bin" / "inner" / "f").write_bytes(b"in a directory")
    summary = tree.sync()
    assert describe(tree.data) == tree.expected
    assert (tree.replaced / "sub" / "c.bin" / "inner" / "f").read_bytes() == b"in a directory"
    assert (summary.copied, summary.set_aside) == (1, 1)


def test_an_index_that_cannot_be_read_or_has_no_root_is_named(tree: Tree) -> None:
    with pytest.raises(BackupError, match=r"cannot read the snapshot index .*/missing: "):
        plan_sync(tree.snap, tree.snap.parent / "missing", tree.data)
    with gzip.open(tree.index, "rt") as stream:
        header, *lines = stream.read().splitlines()
    with gzip.open(tree.index, "wt") as stream:
        stream.write(header + "\n")
        stream.writelines(line + "\n" for line in lines if json.loads(line)["p"] != ".")
    with pytest.raises(BackupError, match=r"the snapshot index .*/snap\.index has no root"):
        tree.sync()
