"""The snapshot index: what is written is read back exactly, streamed, private; anything else,
and any path that could leave the tree, is refused."""

from __future__ import annotations

import gzip
import hashlib
import json
import stat
from pathlib import Path

import pytest

from specivod.adapters.backup.snapshot_index import Entry, read_index, write_index

SHA = "ab" * 32


def entries(count: int) -> list[Entry]:
    result = [Entry(".", "dir", 0o755, 0, 0, 1)]
    for number in range(count):
        result.append(
            Entry(f"a/b/f{number}", "file", 0o4755, 1000, 1001, -5, 123, SHA, inode=number + 7)
        )
    result.append(Entry("a/l", "symlink", 0o777, 0, 0, 9, target="../../outside"))
    result.append(Entry("a/h", "file", 0o600, 0, 0, 9, 123, SHA, link_of="a/b/f0"))
    result.append(Entry("odd-\udcff-név", "dir", 0o700, 0, 0, 9))
    return result


def test_what_is_written_is_read_back_exactly(tmp_path: Path) -> None:
    written = entries(3)
    sha256, count = write_index(tmp_path / "index", iter(written))
    assert count == len(written)
    assert list(read_index(tmp_path / "index")) == written
    assert sha256 == hashlib.sha256((tmp_path / "index").read_bytes()).hexdigest()
    assert stat.S_IMODE((tmp_path / "index").stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["index"]


def test_many_entries_stay_compact(tmp_path: Path) -> None:
    write_index(tmp_path / "index", iter(entries(20_000)))
    assert (tmp_path / "index").stat().st_size < 100 * 20_000
    assert sum(1 for _ in read_index(tmp_path / "index")) == 20_004


def test_a_failed_walk_leaves_no_index_and_no_temp_file(tmp_path: Path) -> None:
    def broken() -> list[Entry]:
        raise OSError("walk failed")

    with pytest.raises(OSError, match="walk failed"):
        write_index(tmp_path / "index", (entry for entry in broken()))
    assert list(tmp_path.iterdir()) == []


def raw_index(path: Path, *records: object) -> Path:
    lines = [json.dumps({"format": "specivod-snapshot-index", "version": 1})]
    lines += [json.dumps(record) for record in records]
    path.write_bytes(gzip.compress("\n".join(lines).encode() + b"\n"))
    return path


@pytest.mark.parametrize(
    "record",
    [
        {"p": "../escape", "k": "dir", "m": 0, "u": 0, "g": 0, "t": 0},
        {"p": "/etc", "k": "dir", "m": 0, "u": 0, "g": 0, "t": 0},
        {"p": "a/../../b", "k": "dir", "m": 0, "u": 0, "g": 0, "t": 0},
        {"p": "a//b", "k": "dir", "m": 0, "u": 0, "g": 0, "t": 0},
        {"p": "a/./b", "k": "dir", "m": 0, "u": 0, "g": 0, "t": 0},
        {"p": "", "k": "dir", "m": 0, "u": 0, "g": 0, "t": 0},
        {"p": "a", "k": "fifo", "m": 0, "u": 0, "g": 0, "t": 0},
        {"p": "a", "k": "file", "m": 0, "u": 0, "g": 0, "t": 0},
        {"p": "a", "k": "file", "m": 0, "u": 0, "g": 0, "t": 0, "h": "xyz"},
        {"p": "a", "k": "file", "m": 0, "u": 0, "g": 0, "t": 0, "h": SHA, "o": "../x"},
        {"p": "a", "k": "symlink", "m": 0, "u": 0, "g": 0, "t": 0},
        {"p": "a", "k": "dir", "m": "0755", "u": 0, "g": 0, "t": 0},
        {"p": "a", "k": "dir", "m": 0, "u": -1, "g": 0, "t": 0},
        {"p": "a", "k": "dir", "m": 0, "u": 0, "g": 0, "t": 0, "zz": 1},
        {"p": ".", "k": "file", "m": 0, "u": 0, "g": 0, "t": 0, "h": SHA},
        ["not", "an", "object"],
    ],
)
def test_entries_that_could_mislead_a_restore_are_refused(tmp_path: Path, record: object) -> None:
    path = raw_index(tmp_path / "index", record)
    with pytest.raises(ValueError, match="line 2"):
        list(read_index(path))


def test_a_valid_raw_record_is_accepted(tmp_path: Path) -> None:
    path = raw_index(tmp_path / "index", {"p": "a b/c", "k": "dir", "m": 0, "u": 0, "g": 0, "t": 0})
    assert [entry.path for entry in read_index(path)] == ["a b/c"]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not gzip at all",
        gzip.compress(b'{"format": "something-else", "version": 1}\n'),
        gzip.compress(b"{broken json\n"),
    ],
)
def test_garbage_is_a_value_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "index").write_bytes(content)
    with pytest.raises(ValueError, match="index"):
        list(read_index(tmp_path / "index"))


def test_a_truncated_index_is_a_value_error(tmp_path: Path) -> None:
    write_index(tmp_path / "index", iter(entries(2000)))
    data = (tmp_path / "index").read_bytes()
    (tmp_path / "index").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="index"):
        list(read_index(tmp_path / "index"))
