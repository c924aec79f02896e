"""Restoring the live data dir from a snapshot by changing only what differs: the result is the
snapshot exactly, what it replaced or removed is kept aside, and a damaged snapshot file is
never put in place."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from specivod.adapters.backup.datasync import TEMP_PREFIX, plan_sync, sync_from_snapshot
from specivod.domain.errors import BackupError
from tests.unit.snapshot_kit import contents, describe, failed_release, two_snapshots

MIB = 1 << 20


def test_a_sync_brings_back_the_snapshot_exactly_and_keeps_what_it_replaced(
    tmp_path: Path,
) -> None:
    paths, expected = two_snapshots(tmp_path)
    data, replaced = tmp_path / "data", tmp_path / "data.replaced-1"
    before_sync = contents(data)
    failed_release(data, paths)
    after_failure = set(contents(data))
    plan = plan_sync(tmp_path / "two", tmp_path / "two.index", data)
    summary = sync_from_snapshot(tmp_path / "two", tmp_path / "two.index", data, replaced)
    assert describe(data) == expected
    assert contents(data) == before_sync
    kept = set(contents(replaced))
    assert after_failure - set(before_sync) <= kept  # every new content is kept aside
    assert (replaced / "new-dir" / "deep" / "upload").read_bytes() == b"added by the failed release"
    assert (replaced / "d1" / "empty").read_bytes() == b"a file where a directory was"
    assert str((replaced / "links" / "passwd").readlink()) == "/etc/shadow"
    assert stat.S_IMODE(replaced.stat().st_mode) == 0o700
    assert summary.copied == plan.files_to_copy
    assert summary.bytes_copied == plan.bytes_to_copy
    assert summary.set_aside == plan.paths_to_set_aside
    assert summary.copied < 30 and summary.unchanged > 900
    assert (data / "sparse.img").stat().st_blocks * 512 < MIB
    assert plan_sync(tmp_path / "two", tmp_path / "two.index", data).files_to_copy == 0


def test_a_second_run_changes_nothing(tmp_path: Path) -> None:
    paths, expected = two_snapshots(tmp_path)
    data = tmp_path / "data"
    failed_release(data, paths)
    sync_from_snapshot(tmp_path / "two", tmp_path / "two.index", data, tmp_path / "aside")
    kept = describe(tmp_path / "aside")
    again = sync_from_snapshot(tmp_path / "two", tmp_path / "two.index", data, tmp_path / "aside")
    assert (again.copied, again.set_aside, again.metadata_fixed) == (0, 0, 0)
    assert describe(data) == expected and describe(tmp_path / "aside") == kept


def test_an_unchanged_data_dir_needs_no_replaced_tree(tmp_path: Path) -> None:
    two_snapshots(tmp_path)
    plan = plan_sync(tmp_path / "two", tmp_path / "two.index", tmp_path / "data")
    assert plan.files_to_copy == plan.paths_to_set_aside == 0
    sync_from_snapshot(
        tmp_path / "two", tmp_path / "two.index", tmp_path / "data", tmp_path / "aside"
    )
    assert not (tmp_path / "aside").exists()


def test_a_missing_data_dir_is_created(tmp_path: Path) -> None:
    _, expected = two_snapshots(tmp_path)
    shutil.rmtree(tmp_path / "data")
    plan = plan_sync(tmp_path / "two", tmp_path / "two.index", tmp_path / "data")
    assert plan.files_to_copy == 1000 + 2  # the hard link counts, the sparse file too
    sync_from_snapshot(
        tmp_path / "two", tmp_path / "two.index", tmp_path / "data", tmp_path / "aside"
    )
    assert describe(tmp_path / "data") == expected


def test_content_changed_behind_size_and_mtime_is_found_by_its_ctime(tmp_path: Path) -> None:
    paths, expected = two_snapshots(tmp_path)
    live = tmp_path / "data" / paths[300]
    status = live.stat()
    live.write_bytes(bytes(255 - byte for byte in live.read_bytes()))
    os.utime(live, ns=(status.st_atime_ns, status.st_mtime_ns))
    quick = sync_from_snapshot(
        tmp_path / "two", tmp_path / "two.index", tmp_path / "data", tmp_path / "aside"
    )
    assert quick.copied == 1
    assert describe(tmp_path / "data") == expected


def test_a_file_rewritten_with_the_same_content_is_read_not_copied(tmp_path: Path) -> None:
    paths, expected = two_snapshots(tmp_path)
    live = tmp_path / "data" / paths[300]
    status = live.stat()
    live.write_bytes(live.read_bytes())
    os.utime(live, ns=(status.st_atime_ns, status.st_mtime_ns))
    quick = sync_from_snapshot(
        tmp_path / "two", tmp_path / "two.index", tmp_path / "data", tmp_path / "aside"
    )
    assert (quick.copied, quick.set_aside) == (0, 0)
    assert describe(tmp_path / "data") == expected


def test_a_damaged_snapshot_file_is_never_put_in_place(tmp_path: Path) -> None:
    paths, _ = two_snapshots(tmp_path)
    data = tmp_path / "data"
    damaged = tmp_path / "two" / paths[200]
    damaged.write_bytes(b"\x00" * damaged.stat().st_size)
    (data / paths[200]).write_bytes(b"the failed release's version")
    with pytest.raises(BackupError, match=f"{paths[200]} does not match its sha256"):
        sync_from_snapshot(tmp_path / "two", tmp_path / "two.index", data, tmp_path / "aside")
    assert (data / paths[200]).read_bytes() == b"the failed release's version"
    assert not list((data / paths[200]).parent.glob(f"{TEMP_PREFIX}*"))
    assert not (tmp_path / "aside" / paths[200]).exists()


def test_the_replaced_tree_must_be_beside_the_data_dir(tmp_path: Path) -> None:
    two_snapshots(tmp_path)
    for wrong in (tmp_path / "elsewhere" / "aside", tmp_path / "data" / "aside", tmp_path / "data"):
        with pytest.raises(BackupError, match="not beside"):
            sync_from_snapshot(tmp_path / "two", tmp_path / "two.index", tmp_path / "data", wrong)


def test_a_taken_name_in_the_replaced_tree_gets_a_free_variant(tmp_path: Path) -> None:
    paths, expected = two_snapshots(tmp_path)
    data, aside = tmp_path / "data", tmp_path / "aside"
    (aside / Path(paths[0]).parent).mkdir(parents=True)
    (aside / paths[0]).write_bytes(b"set aside by an earlier run")
    (aside / "d4").write_bytes(b"a file where the new set-aside needs a directory")
    (data / paths[0]).write_bytes(b"failed")
    (data / "d4" / "added.txt").write_bytes(b"added")
    sync_from_snapshot(tmp_path / "two", tmp_path / "two.index", data, aside)
    assert describe(data) == expected
    assert (aside / paths[0]).read_bytes() == b"set aside by an earlier run"
    assert (aside / f"{paths[0]}~1").read_bytes() == b"failed"
    assert (aside / "d4~1" / "added.txt").read_bytes() == b"added"


def test_temp_files_of_an_interrupted_run_are_removed(tmp_path: Path) -> None:
    _, expected = two_snapshots(tmp_path)
    leftover = tmp_path / "data" / "d2" / f"{TEMP_PREFIX}0123456789abcdef01234567.tmp"
    leftover.write_bytes(b"half a copy")
    sync_from_snapshot(
        tmp_path / "two", tmp_path / "two.index", tmp_path / "data", tmp_path / "aside"
    )
    assert describe(tmp_path / "data") == expected
    assert not (tmp_path / "aside").exists()
