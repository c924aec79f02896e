"""The fast paths of the snapshot index: lines written byte for byte as ``json`` writes them,
and the previous snapshot's files loaded without an ``Entry`` each, refusing what it cannot use."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from specivod.adapters.backup.snapshot_index import Entry, read_index, read_known, write_index

SHA = "cd" * 32

ODD = [
    Entry(".", "dir", 0o755, 0, 0, 0),
    Entry('q"u\\o\te\n', "file", 0o4755, 1000, 1001, -5, 123, SHA, inode=7, ctime_ns=9),
    Entry("odd-\udcff-név/日本", "file", 0o600, 2**40, 0, 2**70, 0, SHA),
    Entry("l", "symlink", 0o777, 0, 0, 9, target='../"x"\x01'),
    Entry("h", "file", 0o600, 0, 0, 9, 5, SHA, inode=3, ctime_ns=1, link_of="q/\u2028"),
]


def as_json(entry: Entry) -> bytes:
    """The line the first version of the index wrote, through ``json``."""
    record: dict[str, Any] = {
        "p": entry.path,
        "k": entry.kind,
        "m": entry.mode,
        "u": entry.uid,
        "g": entry.gid,
        "t": entry.mtime_ns,
    }
    for short, value in (
        ("s", entry.size),
        ("h", entry.sha256),
        ("l", entry.target),
        ("i", entry.inode),
        ("c", entry.ctime_ns),
        ("o", entry.link_of),
    ):
        if value:
            record[short] = value
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def test_lines_are_what_json_writes(tmp_path: Path) -> None:
    write_index(tmp_path / "index", iter(ODD))
    lines = gzip.decompress((tmp_path / "index").read_bytes()).splitlines(keepends=True)
    assert lines[1:] == [as_json(entry) for entry in ODD]
    assert list(read_index(tmp_path / "index")) == ODD


def test_known_files_are_those_of_the_full_read(tmp_path: Path) -> None:
    write_index(tmp_path / "index", iter(ODD))
    expected = {
        entry.path: (entry.size, entry.mtime_ns, entry.inode, entry.ctime_ns, entry.sha256)
        for entry in read_index(tmp_path / "index")
        if entry.kind == "file"
    }
    assert read_known(tmp_path / "index") == expected
    assert len(expected) == 3


def raw_index(path: Path, *records: object) -> Path:
    lines = [json.dumps({"format": "specivod-snapshot-index", "version": 1})]
    lines += [json.dumps(record) for record in records]
    path.write_bytes(gzip.compress("\n".join(lines).encode() + b"\n"))
    return path


GOOD = {"p": "a", "k": "file", "m": 420, "u": 0, "g": 0, "t": 1, "s": 1, "h": SHA}


@pytest.mark.parametrize(
    "record",
    [
        [GOOD],
        {**GOOD, "h": "AB" * 32},
        {**GOOD, "h": None},
        {**GOOD, "s": "1"},
        {**GOOD, "t": 1.5},
        {**GOOD, "i": True},
        {**GOOD, "p": 5},
    ],
)
def test_a_file_record_it_cannot_use_is_a_value_error(tmp_path: Path, record: object) -> None:
    index = raw_index(tmp_path / "index", GOOD, record)
    with pytest.raises(ValueError, match="line 3"):
        read_known(index)


def test_a_damaged_or_foreign_index_is_a_value_error(tmp_path: Path) -> None:
    (tmp_path / "index").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="not a readable snapshot index"):
        read_known(tmp_path / "index")
    (tmp_path / "index").write_bytes(gzip.compress(b'{"format":"other"}\n'))
    with pytest.raises(ValueError, match="not a snapshot index"):
        read_known(tmp_path / "index")


def test_lines_across_read_chunks_keep_their_numbers(tmp_path: Path) -> None:
    records = [{**GOOD, "p": f"dir/file-{number:06d}"} for number in range(30_000)]
    records[-1]["s"] = -1.5
    index = raw_index(tmp_path / "index", *records)
    assert len(gzip.decompress(index.read_bytes())) > 3 << 20
    with pytest.raises(ValueError, match="line 30001"):
        read_known(index)
    with pytest.raises(ValueError, match="line 30001"):
        list(read_index(index))
    records[-1]["s"] = 1
    index = raw_index(tmp_path / "index", *records)
    known = read_known(index)
    assert list(known) == [record["p"] for record in records]
    assert [entry.path for entry in read_index(index)] == list(known)
