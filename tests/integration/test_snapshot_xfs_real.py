"""Snapshots and the sync restore on a real XFS (a loop-mounted image): copies are reflinks that
share their extents, and a data dir that is itself a mount point is restored without renaming
it, its replaced files moved across file systems. Needs root (mount); never skipped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from specivod.adapters.backup.datasync import plan_sync, sync_from_snapshot
from specivod.adapters.backup.snapshot import check_snapshot, take_snapshot
from tests.support.xfs import mounted_xfs, shared
from tests.unit.snapshot_kit import (
    build_tree,
    change_files,
    contents,
    describe,
    failed_release,
    snapshots_of,
)


@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_xfs(tmp_path, 1 << 30) as mount_point:
        yield mount_point


def test_snapshots_on_xfs_are_reflinks_and_restore_exactly(xfs: Path) -> None:
    data, backups = xfs / "data", xfs / "backups"
    backups.mkdir(mode=0o700)
    paths, expected, (one, two) = snapshots_of(data, backups)
    assert one.reflinked == one.files_copied == 1001  # the hard link's second name is a link
    assert (two.files_copied, two.reflinked, two.files_linked) == (10, 10, 991)
    assert shared(backups / "two" / paths[0])  # the changed file, reflinked from the live one
    check_snapshot(backups / "two", backups / "two.index", two.index_sha256, read_files=True)

    before = set(contents(data))
    new_contents = set(failed_release(data, paths)) - before
    sparse = (backups / "two" / "sparse.img").stat()
    plan = plan_sync(backups / "two", backups / "two.index", data)
    summary = sync_from_snapshot(backups / "two", backups / "two.index", data, xfs / "aside")
    assert describe(data) == expected
    assert new_contents <= set(contents(xfs / "aside"))
    assert summary.copied == plan.files_to_copy and summary.copied < 40
    assert shared(data / paths[0])  # restored as a reflink of the snapshot's copy
    assert (data / "sparse.img").stat().st_blocks == sparse.st_blocks


def test_a_data_dir_that_is_a_mount_point_is_restored_in_place(xfs: Path, tmp_path: Path) -> None:
    data, backups = xfs, tmp_path / "backups"
    paths = build_tree(data, files=200)
    backups.mkdir(mode=0o700)
    take_snapshot(data, backups / "one", backups / "one.index", None)
    expected = describe(data)
    before = set(contents(data))
    (data / "added" / "deep").mkdir(parents=True)
    (data / "added" / "deep" / "upload").write_bytes(b"added by the failed release")
    change_files(data, paths, every=10, salt=b"failed")
    new_contents = set(contents(data)) - before
    device = data.stat().st_dev
    summary = sync_from_snapshot(backups / "one", backups / "one.index", data, tmp_path / "aside")
    assert data.stat().st_dev == device  # still the mount point, not renamed or replaced
    assert describe(data) == expected
    assert (tmp_path / "aside" / "added" / "deep" / "upload").read_bytes() == (
        b"added by the failed release"
    )
    assert new_contents <= set(contents(tmp_path / "aside"))
    assert summary.copied == 20
