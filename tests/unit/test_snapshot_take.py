"""Taking snapshots of a real directory tree: complete, incremental through hard links to the
previous snapshot (never to the live tree), faithful in metadata, sparse files and symlinks, and
not thrown by files that vanish or change while it runs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from specivod.adapters.backup.snapshot import (
    Previous,
    check_snapshot,
    estimate_snapshot,
    take_snapshot,
)
from specivod.adapters.backup.snapshot_index import read_index
from specivod.domain.errors import BackupError
from tests.unit.snapshot_kit import IS_ROOT, OTHER_UID, build_tree, change_files, describe, snap

MIB = 1 << 20


def test_the_first_snapshot_is_the_data_dir_with_a_private_root(tmp_path: Path) -> None:
    paths = build_tree(tmp_path / "data")
    summary = snap(tmp_path, "one")
    expected = describe(tmp_path / "data")
    got = describe(tmp_path / "one")
    assert got.pop(".")[:3] == ("dir", 0o700, os.geteuid())
    expected.pop(".")  # the data dir's own mode is in the index, checked below
    assert got == expected
    assert (summary.files, summary.files_copied, summary.files_linked) == (1000, 1000, 0)
    assert (
        summary.bytes_total
        == summary.bytes_copied
        == sum((tmp_path / "data" / path).stat().st_size for path in paths)
    )
    assert summary.directories == len([e for e in expected.values() if e[0] == "dir"]) + 1
    index = {entry.path: entry for entry in read_index(tmp_path / "one.index")}
    root = (tmp_path / "data").stat()
    assert (index["."].mode, index["."].mtime_ns) == (stat.S_IMODE(root.st_mode), root.st_mtime_ns)
    assert len(index) == len(expected) + 1
    check_snapshot(tmp_path / "one", tmp_path / "one.index", summary.index_sha256, read_files=True)


@pytest.mark.skipif(not IS_ROOT, reason="owners other than the caller's need root")
def test_owners_and_setuid_bits_survive(tmp_path: Path) -> None:
    paths = build_tree(tmp_path / "data")
    snap(tmp_path, "one")
    copy = (tmp_path / "one" / paths[7]).stat()
    assert copy.st_uid == OTHER_UID
    assert stat.S_IMODE((tmp_path / "one" / paths[5]).stat().st_mode) == 0o4755
    assert (tmp_path / "one" / "d3").stat().st_uid == OTHER_UID


def test_a_second_snapshot_copies_only_what_changed_and_links_the_rest(tmp_path: Path) -> None:
    paths = build_tree(tmp_path / "data")
    snap(tmp_path, "one")
    changed = set(change_files(tmp_path / "data", paths, every=100, salt=b"second"))
    (tmp_path / "data" / paths[1]).chmod(0o600)  # metadata only: the old copy would carry 0644
    summary = snap(tmp_path, "two", "one")
    copied = changed | {paths[1]}
    assert (summary.files_copied, summary.files_linked) == (len(copied), 1000 - len(copied))
    assert summary.bytes_copied == sum((tmp_path / "data" / p).stat().st_size for p in copied)
    for path in paths:
        old, new, live = ((tmp_path / tree / path).stat() for tree in ("one", "two", "data"))
        assert new.st_ino != live.st_ino  # never a link to the live data dir
        if path in copied:
            assert new.st_ino != old.st_ino and new.st_nlink == 1
        else:
            assert new.st_ino == old.st_ino and new.st_nlink == 2
    assert describe(tmp_path / "two") | {".": 0} == describe(tmp_path / "data") | {".": 0}


def test_deleting_the_first_snapshot_loses_nothing_of_the_second(tmp_path: Path) -> None:
    paths = build_tree(tmp_path / "data")
    snap(tmp_path, "one")
    change_files(tmp_path / "data", paths, every=100, salt=b"second")
    summary = snap(tmp_path, "two", "one")
    expected = describe(tmp_path / "two")
    for directory, _, names in os.walk(tmp_path / "one"):
        for name in names:
            (Path(directory) / name).unlink()
    assert describe(tmp_path / "two") == expected
    check_snapshot(tmp_path / "two", tmp_path / "two.index", summary.index_sha256, read_files=True)


def test_a_copy_of_the_previous_snapshot_that_was_damaged_is_not_linked(tmp_path: Path) -> None:
    paths = build_tree(tmp_path / "data")
    snap(tmp_path, "one")
    (tmp_path / "one" / paths[3]).write_bytes(b"truncated")
    summary = snap(tmp_path, "two", "one")
    assert summary.files_copied == 1
    assert (tmp_path / "two" / paths[3]).read_bytes() == (tmp_path / "data" / paths[3]).read_bytes()


def test_content_changed_in_place_behind_size_and_mtime_is_copied(tmp_path: Path) -> None:
    paths = build_tree(tmp_path / "data")
    snap(tmp_path, "one")
    live = tmp_path / "data" / paths[20]
    status = live.stat()
    with live.open("r+b") as stream:
        stream.write(b"\x00\x01\x02" if stream.read(3) != b"\x00\x01\x02" else b"\xff\xfe\xfd")
    os.utime(live, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert live.stat().st_ino == status.st_ino
    for name, checksum in (("quick", False), ("thorough", True)):
        summary = snap(tmp_path, name, "one", checksum=checksum)
        assert summary.files_copied == 1, name
        assert (tmp_path / name / paths[20]).read_bytes() == live.read_bytes()


def test_hard_links_inside_the_data_dir_stay_hard_links(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "a" / "first").write_bytes(b"shared" * 1000)
    os.link(data / "a" / "first", data / "second")
    os.link(data / "a" / "first", data / "a" / "third")
    summary = snap(tmp_path, "one")
    inodes = {(tmp_path / "one" / p).stat().st_ino for p in ("a/first", "second", "a/third")}
    assert len(inodes) == 1
    assert (summary.files, summary.files_copied, summary.hard_links) == (3, 1, 2)
    index = {entry.path: entry for entry in read_index(tmp_path / "one.index")}
    assert index["second"].link_of == index["a/third"].link_of == "a/first"
    summary = snap(tmp_path, "two", "one")
    assert (summary.files_linked, summary.hard_links) == (1, 2)
    assert (tmp_path / "two" / "second").stat().st_ino == (
        tmp_path / "one" / "a/first"
    ).stat().st_ino


def test_sparse_files_stay_sparse(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with (data / "disk.img").open("wb") as stream:
        stream.truncate(64 * MIB)
        stream.seek(30 * MIB)
        stream.write(b"middle")
        stream.seek(64 * MIB - 5)
        stream.write(b"tail!")
    summary = snap(tmp_path, "one")
    copy = (tmp_path / "one" / "disk.img").stat()
    assert copy.st_size == 64 * MIB
    assert copy.st_blocks * 512 < MIB
    assert summary.bytes_total == 64 * MIB
    check_snapshot(tmp_path / "one", tmp_path / "one.index", summary.index_sha256, read_files=True)


def test_symlinks_are_kept_as_links_and_never_followed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "a" / "b").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"s" * 5000)
    (data / "a" / "b" / "out").symlink_to("../../../outside/secret")
    (data / "passwd").symlink_to("/etc/passwd")
    (data / "dir-link").symlink_to("../outside")
    (data / "dangling").symlink_to("nowhere")
    summary = snap(tmp_path, "one")
    for name, target in [
        ("a/b/out", "../../../outside/secret"),
        ("passwd", "/etc/passwd"),
        ("dir-link", "../outside"),
        ("dangling", "nowhere"),
    ]:
        assert str((tmp_path / "one" / name).readlink()) == target
    assert (summary.symlinks, summary.files, summary.bytes_total) == (4, 0, 0)
    assert not any(entry.kind == "file" for entry in read_index(tmp_path / "one.index"))


def test_special_files_are_skipped_and_counted(tmp_path: Path) -> None:
    build_tree(tmp_path / "data", files=10)
    os.mkfifo(tmp_path / "data" / "pipe")
    summary = snap(tmp_path, "one")
    assert (summary.skipped, summary.files) == (1, 10)
    assert not (tmp_path / "one" / "pipe").exists()


def test_a_file_that_vanishes_before_it_is_read_is_counted_not_fatal(tmp_path: Path) -> None:
    paths = build_tree(tmp_path / "data", files=50)
    doomed = tmp_path / "data" / paths[10]
    gone_dir = tmp_path / "data" / "d9"

    def seen(path: Path) -> None:
        if path == doomed:
            path.unlink()
        if path == gone_dir:
            for directory, _, names in os.walk(path, topdown=False):
                for name in names:
                    (Path(directory) / name).unlink()
                Path(directory).rmdir()

    summary = take_snapshot(
        tmp_path / "data", tmp_path / "one", tmp_path / "one.index", None, seen=seen
    )
    assert summary.vanished == 2
    assert summary.files == 50 - 1 - len([p for p in paths if p.startswith("d9/")])
    index = {entry.path for entry in read_index(tmp_path / "one.index")}
    assert paths[10] not in index and "d9" not in index
    check_snapshot(tmp_path / "one", tmp_path / "one.index", summary.index_sha256, read_files=True)


def growing_file(tmp_path: Path, times: int) -> tuple[Path, list[int]]:
    """A 3 MiB live file that grows by a line during the first ``times`` copies of it."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "log").write_bytes(b"x" * 3 * MIB)
    return data / "log", [times]


def test_a_file_that_changes_while_copied_is_copied_again(tmp_path: Path) -> None:
    live, left = growing_file(tmp_path, times=1)
    current: list[Path] = []

    def done(_: int) -> None:
        if current and current[-1] == live and left[0] > 0:
            left[0] -= 1
            with live.open("ab") as stream:
                stream.write(b"appended while copied\n")

    summary = take_snapshot(
        live.parent, tmp_path / "one", tmp_path / "one.index", None, done=done, seen=current.append
    )
    assert (summary.changed, summary.flagged) == (1, 0)
    assert (tmp_path / "one" / "log").read_bytes() == live.read_bytes()
    check_snapshot(tmp_path / "one", tmp_path / "one.index", summary.index_sha256, read_files=True)


def test_a_file_that_keeps_changing_is_kept_as_last_read_and_flagged(tmp_path: Path) -> None:
    live, _ = growing_file(tmp_path, times=0)
    current: list[Path] = []

    def done(_: int) -> None:
        if current and current[-1] == live:
            with live.open("ab") as stream:
                stream.write(b"appended while copied\n")

    summary = take_snapshot(
        live.parent, tmp_path / "one", tmp_path / "one.index", None, done=done, seen=current.append
    )
    assert (summary.changed, summary.flagged, summary.files) == (1, 1, 1)
    check_snapshot(tmp_path / "one", tmp_path / "one.index", summary.index_sha256, read_files=True)


def test_the_estimate_counts_what_the_snapshot_will_copy(tmp_path: Path) -> None:
    paths = build_tree(tmp_path / "data")
    first = estimate_snapshot(tmp_path / "data", None)
    one = snap(tmp_path, "one")
    assert (first.files, first.files_to_copy, first.bytes_to_copy) == (1000, 1000, one.bytes_total)
    changed = change_files(tmp_path / "data", paths, every=50, salt=b"e")
    second = estimate_snapshot(
        tmp_path / "data", Previous(tmp_path / "one", tmp_path / "one.index")
    )
    two = snap(tmp_path, "two", "one")
    assert (second.files_to_copy, second.bytes_to_copy) == (len(changed), two.bytes_copied)
    assert second.bytes_total == two.bytes_total
    assert 0 < second.metadata_bytes < 2 * MIB
    assert second.bytes_needed == second.bytes_to_copy + second.metadata_bytes


def test_check_names_the_first_problem(tmp_path: Path) -> None:
    paths = build_tree(tmp_path / "data", files=30)
    summary = snap(tmp_path, "one")
    tree, index = tmp_path / "one", tmp_path / "one.index"
    with pytest.raises(BackupError, match="checksum"):
        check_snapshot(tree, index, "0" * 64, read_files=False)
    victim = tree / paths[4]
    victim.write_bytes(b"?" * victim.stat().st_size)  # same size: only reading finds it
    check_snapshot(tree, index, summary.index_sha256, read_files=False)
    with pytest.raises(BackupError, match=f"{paths[4]} does not match its sha256"):
        check_snapshot(tree, index, summary.index_sha256, read_files=True)
    (tree / paths[9]).write_bytes(b"short")
    with pytest.raises(BackupError, match=f"{paths[9]} has 5 bytes"):
        check_snapshot(tree, index, summary.index_sha256, read_files=False)
    (tree / paths[9]).unlink()
    with pytest.raises(BackupError, match=f"{paths[9]} is missing"):
        check_snapshot(tree, index, summary.index_sha256, read_files=False)


def test_an_existing_tree_is_refused_and_a_failed_snapshot_leaves_nothing(tmp_path: Path) -> None:
    build_tree(tmp_path / "data", files=10)
    (tmp_path / "one").mkdir()
    with pytest.raises(BackupError, match="cannot create"):
        snap(tmp_path, "one")

    def fail(_: Path) -> None:
        raise OSError("disk on fire")

    with pytest.raises(BackupError, match="disk on fire"):
        take_snapshot(tmp_path / "data", tmp_path / "two", tmp_path / "two.index", None, seen=fail)
    assert not (tmp_path / "two").exists() and not (tmp_path / "two.index").exists()
