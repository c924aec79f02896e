"""Attack review of the snapshot backups and the sync restore (issue 10): sequences of events
that lose data. Each test is a finding that fails on the code it was written against; it stays
``xfail(strict=True)`` until the fix lands, then the marker goes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from specivod.adapters.backup.backups import Backups
from specivod.adapters.backup.datasync import sync_from_snapshot
from specivod.adapters.backup.manifest import DataDirSnapshot
from specivod.adapters.backup.set_aside import prune_set_aside
from specivod.adapters.backup.snapshot import Previous, take_snapshot
from specivod.adapters.backup.snapshot_index import Entry, read_index
from specivod.domain.errors import BackupError
from tests.unit.test_backup_facade import FakeCompose, make

DAY = timedelta(days=1)
NINETY_DAYS_AGO_NS = int((datetime.now(UTC) - 90 * DAY).timestamp() * 1e9)


def test_a_data_dir_set_aside_yesterday_under_the_old_naming_is_kept(tmp_path: Path) -> None:
    # Before issue 10 an archive restore renamed the whole data dir to <data>.replaced-tx<N>.
    # A directory's mtime is when an entry in it last changed, not when it was renamed.
    data_dir = tmp_path / "project" / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "attachments.bin").write_bytes(b"rows the failed release wrote" * 100)
    os.utime(data_dir, ns=(NINETY_DAYS_AGO_NS, NINETY_DAYS_AGO_NS))
    aside = data_dir.with_name("data.replaced-tx5")
    data_dir.rename(aside)  # the restore of yesterday, by the previous specivod
    data_dir.mkdir()  # the restored data dir

    deleted = prune_set_aside(data_dir, 7 * DAY, datetime.now(UTC), protected=())

    assert deleted == []
    assert (aside / "attachments.bin").exists()


def test_a_directory_the_operator_named_like_a_set_aside_is_not_deleted(tmp_path: Path) -> None:
    data_dir = tmp_path / "project" / "data"
    data_dir.mkdir(parents=True)
    mine = data_dir.with_name("data.replaced-by-hand-before-migration")
    mine.mkdir()
    (mine / "keep.txt").write_text("the operator's own copy\n")
    os.utime(mine, ns=(NINETY_DAYS_AGO_NS, NINETY_DAYS_AGO_NS))

    prune_set_aside(data_dir, 7 * DAY, datetime.now(UTC), protected=())

    assert (mine / "keep.txt").exists()


RUNAWAY_PREFIX = "specivod-attack-runaway-"


@pytest.fixture
def deep_tree_safe() -> Iterator[Path]:
    """A directory outside pytest's tmp dirs, removed with ``rm -rf``: the runaway snapshot
    below nests ~1000 levels deep, deeper than shutil.rmtree (and so pytest's own cleanup of its
    tmp dirs) can recurse."""
    base = Path(tempfile.gettempdir())
    for leftover in base.glob(f"{RUNAWAY_PREFIX}*"):
        subprocess.run(["rm", "-rf", "--", str(leftover)], check=False)
    root = Path(tempfile.mkdtemp(prefix=RUNAWAY_PREFIX, dir=base))
    try:
        yield root
    finally:
        subprocess.run(["rm", "-rf", "--", str(root)], check=False)


async def test_a_backup_dir_inside_the_data_dir_is_refused_or_left_out(
    deep_tree_safe: Path,
) -> None:
    data_dir = deep_tree_safe / "project" / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "FORMAT").write_text("format 1\n")
    backups = make(deep_tree_safe, FakeCompose(data_dir), dir=data_dir / "backups", keep=5)
    try:
        first = await backups.create(version="0.1.10", reason="manual")
    except BackupError:  # refusing this configuration is a fix
        assert [p.name for p in backups.directory.iterdir()] == []
        return
    (data_dir / "FORMAT").write_text("format 2\n")
    second = await backups.create(version="0.2.0", reason="before upgrade to 0.3.0")
    assert "backups" not in {entry.path.split("/")[0] for entry in _index(backups, second.id)}

    with contextlib.suppress(BackupError):
        await backups.restore(first.id, data_aside=backups.data_aside_path("tx7"))

    assert [m.id for m in backups.list()] == [second.id, first.id]


def _index(backups: Backups, backup_id: str) -> list[Entry]:
    manifest = backups.get(backup_id)
    assert isinstance(manifest.data_dir, DataDirSnapshot)
    return list(read_index(backups.path(backup_id) / manifest.data_dir.index))


# Attack finding 3 (the quick check ignored ctime), fixed in b1e44fa: kept as its regression test.
def test_content_rewritten_in_place_with_its_mtime_kept_reaches_the_next_snapshot(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    live = data / "avatar.png"
    live.write_bytes(b"A" * 4096)
    take_snapshot(data, tmp_path / "one", tmp_path / "one.index", None)
    status = live.stat()
    with live.open("r+b") as stream:  # same inode, same size
        stream.write(b"B" * 4096)
    os.utime(live, ns=(status.st_atime_ns, status.st_mtime_ns))  # what cp -p does
    assert live.stat().st_ctime_ns != status.st_ctime_ns  # the change is visible

    take_snapshot(
        data,
        tmp_path / "two",
        tmp_path / "two.index",
        Previous(tmp_path / "one", tmp_path / "one.index"),
    )

    assert (tmp_path / "two" / "avatar.png").read_bytes() == b"B" * 4096


def test_a_set_aside_file_does_not_share_its_inode_with_the_restored_data_dir(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "search.idx").write_bytes(b"index of 0.1.10" * 100)
    take_snapshot(data, tmp_path / "snap", tmp_path / "snap.index", None)
    os.link(data / "search.idx", data / "search.idx.bak")  # the failed release's migration

    sync_from_snapshot(tmp_path / "snap", tmp_path / "snap.index", data, tmp_path / "aside")

    kept, set_aside = data / "search.idx", tmp_path / "aside" / "search.idx.bak"
    assert set_aside.exists()
    assert kept.stat().st_ino != set_aside.stat().st_ino
