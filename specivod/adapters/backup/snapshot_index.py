"""The index of a data-dir snapshot: one record per path, the data dir itself included as ".".

The file is gzip'd JSON lines: a header line, then one compact object per entry in the order
the snapshot walked the tree (a directory before its contents, names sorted). It is written and
read as a stream, so a data dir of any size costs a constant amount of memory here. Reading
refuses anything that is not such a file, and every path that could leave the tree it describes
(absolute, "..", empty or "." components), because a restore writes to those paths.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from specivod.adapters.backup.files import FILE_MODE, fsync_directory, sha256_of

Kind = Literal["file", "dir", "symlink"]
KINDS: frozenset[str] = frozenset({"file", "dir", "symlink"})
HEADER = {"format": "specivod-snapshot-index", "version": 1}
ROOT = "."
_SHA256 = re.compile("[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Entry:
    path: str
    """Relative POSIX path; "." is the data dir itself."""
    kind: Kind
    mode: int
    """``stat.S_IMODE`` of the live path (setuid, setgid and sticky included)."""
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    sha256: str | None = None
    """Files: computed for what was copied, carried over for what was linked."""
    target: str | None = None
    """Symlinks: the target verbatim, never resolved."""
    inode: int = 0
    """The live file's inode when it was snapshotted (change detection)."""
    ctime_ns: int = 0
    link_of: str | None = None
    """A hard link inside the data dir: the path of the first entry with the same inode."""


_SHORT = {
    "path": "p",
    "kind": "k",
    "mode": "m",
    "uid": "u",
    "gid": "g",
    "mtime_ns": "t",
    "size": "s",
    "sha256": "h",
    "target": "l",
    "inode": "i",
    "ctime_ns": "c",
    "link_of": "o",
}
_LONG = {short: name for name, short in _SHORT.items()}
_DEFAULTS: dict[str, Any] = {
    "size": 0,
    "sha256": None,
    "target": None,
    "inode": 0,
    "ctime_ns": 0,
    "link_of": None,
}
_INTS = ("mode", "uid", "gid", "mtime_ns", "size", "inode", "ctime_ns")
_OPTIONAL_TEXT = ("sha256", "target", "link_of")


def _encode(entry: Entry) -> bytes:
    record: dict[str, Any] = {}
    for name, short in _SHORT.items():
        value = getattr(entry, name)
        if name in _DEFAULTS and value == _DEFAULTS[name]:
            continue
        record[short] = value
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def entry_of(
    path: str,
    kind: Kind,
    status: os.stat_result,
    *,
    size: int = 0,
    sha256: str | None = None,
    target: str | None = None,
) -> Entry:
    return Entry(
        path=path,
        kind=kind,
        mode=stat.S_IMODE(status.st_mode),
        uid=status.st_uid,
        gid=status.st_gid,
        mtime_ns=status.st_mtime_ns,
        size=size,
        sha256=sha256,
        target=target,
        inode=status.st_ino if kind == "file" else 0,
        ctime_ns=status.st_ctime_ns,
    )


def relinked(first: Entry, path: str) -> Entry:
    return Entry(
        path=path,
        kind="file",
        mode=first.mode,
        uid=first.uid,
        gid=first.gid,
        mtime_ns=first.mtime_ns,
        size=first.size,
        sha256=first.sha256,
        inode=first.inode,
        ctime_ns=first.ctime_ns,
        link_of=first.path,
    )


def write_index(path: Path, entries: Iterable[Entry]) -> tuple[str, int]:
    """Write the index at ``path`` (0600, fsynced, in place by rename): its sha256 and entry count.

    ``entries`` is consumed as it is produced, so it may be the walk that takes the snapshot."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    count = 0
    try:
        with os.fdopen(descriptor, "wb") as raw:
            os.fchmod(raw.fileno(), FILE_MODE)
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=3, mtime=0) as stream:
                stream.write(json.dumps(HEADER, separators=(",", ":")).encode() + b"\n")
                batch: list[bytes] = []
                for entry in entries:
                    batch.append(_encode(entry))
                    count += 1
                    if len(batch) >= 512:
                        stream.write(b"".join(batch))
                        batch.clear()
                stream.write(b"".join(batch))
            raw.flush()
            os.fsync(raw.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return sha256_of(path), count


def read_index(path: Path) -> Iterator[Entry]:
    """The entries of the index at ``path``, streamed; ``ValueError`` on anything malformed."""
    try:
        with gzip.open(path, "rb") as stream:
            header = stream.readline()
            if _header(header) != HEADER:
                raise ValueError(f"{path} is not a snapshot index (header {header[:80]!r})")
            for number, line in enumerate(stream, start=2):
                try:
                    yield _decode(_loads(line))
                except ValueError as error:
                    raise ValueError(f"{path}: line {number}: {error}") from None
    except (OSError, EOFError, zlib.error) as error:
        if isinstance(error, FileNotFoundError | PermissionError):
            raise
        raise ValueError(f"{path} is not a readable snapshot index: {error}") from None


def _header(line: bytes) -> Any:
    try:
        return _loads(line)
    except ValueError:
        return None


def _loads(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"not JSON: {error}") from None


def _decode(record: Any) -> Entry:
    if not isinstance(record, dict) or not set(record) <= set(_LONG):
        raise ValueError(f"not an entry: {str(record)[:120]}")
    fields = {_LONG[short]: value for short, value in record.items()}
    for name in _INTS:
        value = fields.get(name, 0)
        if type(value) is not int or (value < 0 and name not in {"mtime_ns", "ctime_ns"}):
            raise ValueError(f"{name} is not a valid integer: {value!r}")
    for name in _OPTIONAL_TEXT:
        if not isinstance(fields.get(name, ""), str):
            raise ValueError(f"{name} is not text: {fields[name]!r}")
    kind = fields.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    path = fields.get("path")
    if not isinstance(path, str) or not is_safe_path(path):
        raise ValueError(f"unsafe path {path!r}")
    link_of = fields.get("link_of")
    if link_of is not None and (kind != "file" or not is_safe_path(link_of) or link_of == ROOT):
        raise ValueError(f"bad hard link {link_of!r} for {path!r}")
    if kind == "file" and not _is_sha256(fields.get("sha256")):
        raise ValueError(f"file {path!r} has no valid sha256")
    if kind == "symlink" and not fields.get("target"):
        raise ValueError(f"symlink {path!r} has no target")
    if path == ROOT and kind != "dir":
        raise ValueError("the root is not a directory")
    return Entry(**fields)


def _is_sha256(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def is_safe_path(path: str) -> bool:
    """A relative path that stays inside its tree: "." or names joined by "/", none "." or ".."."""
    if path == ROOT:
        return True
    if not path or "\0" in path:
        return False
    return all(part not in {"", ".", ".."} for part in path.split("/"))
