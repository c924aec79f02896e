"""Trees restores set aside beside the data dir: listed with sizes, deleted by age, never one a
failed or unfinished transaction names, never anything else beside the data dir."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from specivod.adapters.backup.set_aside import list_set_aside, prune_set_aside

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def _tree(path: Path, size: int = 10) -> Path:
    (path / "attachments").mkdir(parents=True)
    (path / "attachments" / "a.bin").write_bytes(b"x" * size)
    return path


def test_old_trees_go_recent_and_named_ones_stay_and_nothing_else_is_touched(
    tmp_path: Path,
) -> None:
    data_dir = _tree(tmp_path / "data")
    old = _tree(tmp_path / "data.replaced-20261101T000000Z-tx3")
    recent = _tree(tmp_path / "data.replaced-20261125T000000Z-tx9")
    named = _tree(tmp_path / "data.replaced-20261001T000000Z-tx1")
    unstamped = _tree(tmp_path / "data.replaced-tx2")
    os.utime(unstamped, (0, 0))
    other_app = _tree(tmp_path / "other.replaced-20200101T000000Z")
    lookalike = _tree(tmp_path / "data.replacedX-20200101T000000Z")

    deleted = prune_set_aside(data_dir, WEEK, NOW, [str(named)])

    assert deleted == [old]
    for kept in (data_dir, recent, named, unstamped, other_app, lookalike):
        assert (kept / "attachments" / "a.bin").is_file()


def test_listing_is_newest_first_with_sizes(tmp_path: Path) -> None:
    data_dir = _tree(tmp_path / "data")
    _tree(tmp_path / "data.replaced-20261101T000000Z-tx3", size=100)
    _tree(tmp_path / "data.replaced-20261125T000000Z-tx9", size=7)
    (tmp_path / "data.replaced-20261126T000000Z-file").write_text("a file, not a tree")

    listed = list_set_aside(data_dir)

    assert [(tree.path.name, tree.size) for tree in listed] == [
        ("data.replaced-20261125T000000Z-tx9", 7),
        ("data.replaced-20261101T000000Z-tx3", 100),
    ]
    assert listed[0].created_at == datetime(2026, 11, 25, tzinfo=UTC)


def test_a_tree_exactly_as_old_as_the_limit_is_kept(tmp_path: Path) -> None:
    data_dir = _tree(tmp_path / "data")
    limit = _tree(tmp_path / "data.replaced-20261119T120000Z-tx4")
    older = _tree(tmp_path / "data.replaced-20261119T115959Z-tx3")

    assert prune_set_aside(data_dir, WEEK, NOW, []) == [older]
    assert limit.is_dir()


def test_a_symlink_named_like_a_set_aside_tree_is_neither_listed_nor_followed(
    tmp_path: Path,
) -> None:
    data_dir = _tree(tmp_path / "data")
    elsewhere = _tree(tmp_path / "operator-archive", size=1000)
    (tmp_path / "data.replaced-20200101T000000Z").symlink_to(elsewhere)

    assert list_set_aside(data_dir) == []
    assert prune_set_aside(data_dir, WEEK, NOW, []) == []
    assert (elsewhere / "attachments" / "a.bin").stat().st_size == 1000
