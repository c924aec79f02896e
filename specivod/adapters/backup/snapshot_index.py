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
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from typing import Any, Literal

from specivod.adapters.backup.files import FILE_MODE, fsync_directory, sha256_of

Kind = Literal["file", "dir", "symlink"]
KINDS: frozenset[str] = frozenset({"file", "dir", "symlink"})
HEADER = {"format": "specivod-snapshot-index", "version": 1}
ROOT = "."
_SHA256 = re.compile("[0-9a-f]{64}")
BATCH_BYTES = 1 << 20
"""Read and parsed at a time: whole lines split here cost less than a ``readline`` each."""


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


KnownFile = tuple[int, int, int, int, str]
"""A file's size, mtime, inode, ctime and sha256 (see ``Known``)."""

_KEYS = frozenset("pkmugtshlico")
"""path, kind, mode, uid, gid, mtime_ns, size, sha256, target (symlink), inode, ctime_ns, link_of:
the defaults (0, None) are left out."""


def _encode(entry: Entry) -> bytes:
    """One line, byte for byte what ``json`` would write for the record (ASCII, no spaces),
    assembled directly: a dict and an encoder call per entry cost more than the rest of the
    entry's walk."""
    if entry.kind == "file" and entry.sha256:
        known = (entry.size, entry.mtime_ns, entry.inode, entry.ctime_ns, entry.sha256)
        return file_line(entry.path, entry.mode, entry.uid, entry.gid, known, link_of=entry.link_of)
    line = (
        f'{{"p":{_quote(entry.path)},"k":{_quote(entry.kind)},"m":{entry.mode},'
        f'"u":{entry.uid},"g":{entry.gid},"t":{entry.mtime_ns}'
    )
    if entry.size:
        line += f',"s":{entry.size}'
    if entry.sha256:
        line += f',"h":{_quote(entry.sha256)}'
    if entry.target:
        line += f',"l":{_quote(entry.target)}'
    if entry.inode:
        line += f',"i":{entry.inode}'
    if entry.ctime_ns:
        line += f',"c":{entry.ctime_ns}'
    if entry.link_of:
        line += f',"o":{_quote(entry.link_of)}'
    return (line + "}\n").encode()


def file_line(
    path: str, mode: int, uid: int, gid: int, known: KnownFile, *, link_of: str | None = None
) -> bytes:
    """The line ``_encode`` writes for a file entry with these fields (the sha256 not empty):
    a file linked from the previous snapshot is written from its stat without an ``Entry``."""
    size, mtime_ns, inode, ctime_ns, sha256 = known
    line = f'{{"p":{_quote(path)},"k":"file","m":{mode},"u":{uid},"g":{gid},"t":{mtime_ns}'
    if size:
        line += f',"s":{size}'
    line += f',"h":{_quote(sha256)}'
    if inode:
        line += f',"i":{inode}'
    if ctime_ns:
        line += f',"c":{ctime_ns}'
    if link_of:
        line += f',"o":{_quote(link_of)}'
    return (line + "}\n").encode()


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
    return write_lines(path, map(_encode, entries))


def encoded(entry: Entry) -> bytes:
    """The index line of ``entry``, as ``write_index`` writes it."""
    return _encode(entry)


def write_lines(path: Path, lines: Iterable[bytes]) -> tuple[str, int]:
    """``write_index`` for entries already encoded (``encoded``, ``file_line``)."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    count = 0
    try:
        with os.fdopen(descriptor, "wb") as raw:
            os.fchmod(raw.fileno(), FILE_MODE)
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as stream:
                stream.write(json.dumps(HEADER, separators=(",", ":")).encode() + b"\n")
                batch: list[bytes] = []
                for line in lines:
                    batch.append(line)
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
    for first, records in _batches(path):
        for number, record in enumerate(records, first):
            try:
                yield _decode(record)
            except ValueError as error:
                raise ValueError(f"{path}: line {number}: {error}") from None


Known = dict[str, KnownFile]
"""Per file of a snapshot: the live file's size, mtime, inode and ctime then, and its sha256."""


def read_known(path: Path) -> Known:
    """What the next snapshot compares against, from the index at ``path``: its files only,
    without building an ``Entry`` each (the whole index is read before a snapshot starts).
    ``ValueError`` on a malformed record among them; a path here is only a key matched against
    the live tree's names, never a place written to."""
    known: Known = {}
    for first, records in _batches(path):
        for number, record in enumerate(records, first):
            if type(record) is not dict:
                raise ValueError(f"{path}: line {number}: not an entry: {str(record)[:120]}")
            get = record.get
            if get("k") == "file":
                name, sha256 = get("p"), get("h")
                size, mtime_ns, inode, ctime_ns = get("s", 0), get("t", 0), get("i", 0), get("c", 0)
                if not (
                    type(name) is str
                    and type(size) is int
                    and type(mtime_ns) is int
                    and type(inode) is int
                    and type(ctime_ns) is int
                    and type(sha256) is str
                    and _SHA256.fullmatch(sha256) is not None
                ):
                    raise ValueError(f"{path}: line {number}: not a file entry: {record!r:.120}")
                known[name] = (size, mtime_ns, inode, ctime_ns, sha256)
    return known


def _batches(path: Path) -> Iterator[tuple[int, list[Any]]]:
    """The records after the header, a batch at a time, each with the line number of its first."""
    try:
        with gzip.open(path, "rb") as stream:
            header = stream.readline()
            if _header(header) != HEADER:
                raise ValueError(f"{path} is not a snapshot index (header {header[:80]!r})")
            number, rest = 2, b""
            while chunk := stream.read(BATCH_BYTES):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()  # the start of a line the next chunk ends
                if lines:
                    yield number, _batch(lines)
                    number += len(lines)
            if rest:
                yield number, _batch([rest])
    except (OSError, EOFError, zlib.error) as error:
        if isinstance(error, FileNotFoundError | PermissionError):
            raise
        raise ValueError(f"{path} is not a readable snapshot index: {error}") from None


def _batch(lines: list[bytes]) -> list[Any]:
    """Many lines parsed in one call (a JSON array of them); line by line only to find an error."""
    try:
        records = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        records = None
    if not isinstance(records, list) or len(records) != len(lines):
        records = [_loads(line) for line in lines]  # raises for the first bad line
    return records


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
    if type(record) is not dict or not record.keys() <= _KEYS:
        raise ValueError(f"not an entry: {str(record)[:120]}")
    get = record.get
    path, kind, link_of, sha256, target = get("p"), get("k"), get("o"), get("h"), get("l")
    numbers = (
        get("m", -1),
        get("u", -1),
        get("g", -1),
        get("t", 0),
        get("s", 0),
        get("i", 0),
        get("c", 0),
    )
    for value in numbers:
        if type(value) is not int:
            raise ValueError(f"not a valid integer: {value!r}")
    if min(numbers[:3]) < 0 or numbers[4] < 0 or numbers[5] < 0:
        raise ValueError(f"a negative mode, owner, size or inode: {numbers}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if type(path) is not str or not is_safe_path(path):
        raise ValueError(f"unsafe path {path!r}")
    if link_of is not None and (
        kind != "file" or type(link_of) is not str or not is_safe_path(link_of) or link_of == ROOT
    ):
        raise ValueError(f"bad hard link {link_of!r} for {path!r}")
    if (kind == "file") != (type(sha256) is str and _SHA256.fullmatch(sha256) is not None):
        raise ValueError(f"{kind} {path!r} with a sha256 of {sha256!r}")
    if (kind == "symlink") != (type(target) is str and target != ""):
        raise ValueError(f"{kind} {path!r} with a symlink target of {target!r}")
    if path == ROOT and kind != "dir":
        raise ValueError("the root is not a directory")
    return Entry(path, kind, *numbers[:5], sha256, target, *numbers[5:], link_of)


def is_safe_path(path: str) -> bool:
    """A relative path that stays inside its tree: "." or names joined by "/", none "." or ".."."""
    if path == ROOT:
        return True
    if not path or "\0" in path:
        return False
    return all(part not in {"", ".", ".."} for part in path.split("/"))
