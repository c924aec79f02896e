"""The manifest: one JSON file per backup saying what it holds, how big each file is, its sha256,
the deployed version and the schema fingerprint at backup time.

The data dir is either a snapshot tree (every backup since incremental snapshots; the index
names each file's size and sha256) or, in backups taken before, one tar archive; both are read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from specivod.adapters.backup.files import BytesDone, sha256_of, write_private_atomically
from specivod.adapters.backup.snapshot import check_snapshot
from specivod.domain.errors import BackupError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class DatabaseDump:
    file: str
    size: int
    sha256: str
    format: str
    """``custom`` (``pg_dump -Fc``), or ``configured`` when ``backup.dump_command`` made it."""
    relations: list[tuple[str, str]] | None = None
    """``(schema, name)`` of the relations in the dump, read when it was validated, so that a
    restore need not read its table of contents again; ``None`` in older manifests."""


@dataclass(frozen=True)
class DataDirArchive:
    source: str
    file: str
    size: int
    sha256: str
    file_count: int
    format: str = "tar"
    vanished_while_archived: int = 0
    """Files and directories that vanished before they were read, skipped (as GNU tar does)."""
    changed_while_archived: int = 0
    """Files that changed while they were read: archived with the size they were first seen at."""


@dataclass(frozen=True)
class DataDirSnapshot:
    source: str
    tree: str
    """The snapshot's directory inside the backup: a copy of the data dir in which files
    unchanged since ``base`` are hard links to that backup's copies."""
    index: str
    """The file listing every path of the snapshot with its size, mode, owner and sha256."""
    index_sha256: str
    file_count: int
    bytes_total: int
    """Bytes of the data dir's regular files."""
    files_copied: int
    bytes_copied: int
    """What this snapshot wrote: new or changed files."""
    files_linked: int
    bytes_linked: int
    """Unchanged files, hard links to the same file in ``base``."""
    reflinked: int = 0
    base: str | None = None
    vanished_while_archived: int = 0
    changed_while_archived: int = 0
    """Files that changed while they were copied and were copied again."""
    flagged: int = 0
    """Files still changing after the copies again: kept as last read."""
    skipped: int = 0
    """Sockets, FIFOs and device files, which a data dir's backup does not keep."""
    format: str = "snapshot"

    @property
    def size(self) -> int:
        """Bytes this snapshot added to the backup directory."""
        return self.bytes_copied


@dataclass(frozen=True)
class Durations:
    database_seconds: float
    data_dir_seconds: float
    total_seconds: float


@dataclass(frozen=True)
class BackupManifest:
    id: str
    created_at: datetime
    version: str | None
    reason: str
    database: DatabaseDump
    data_dir: DataDirSnapshot | DataDirArchive
    fingerprint: str
    durations: Durations
    valid: bool
    safety: bool = False
    """Taken just before a restore replaced the state it holds: kept by age, not counted in
    ``backup.keep``."""

    @property
    def size(self) -> int:
        """Bytes on disk this backup added: the dump and what its data dir copy wrote."""
        return self.database.size + self.data_dir.size

    @property
    def is_snapshot(self) -> bool:
        return isinstance(self.data_dir, DataDirSnapshot)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["size"] = self.size
        return {"format": MANIFEST_FORMAT, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackupManifest:
        """Raises ``ValueError`` for anything that is not a manifest this code wrote."""
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {data.get('format')!r}")
        try:
            return cls(
                id=str(data["id"]),
                created_at=datetime.fromisoformat(data["created_at"]),
                version=None if data["version"] is None else str(data["version"]),
                reason=str(data["reason"]),
                database=_database_dump(data["database"]),
                data_dir=_data_dir(data["data_dir"]),
                fingerprint=str(data["fingerprint"]),
                durations=Durations(**data["durations"]),
                valid=data["valid"] is True,
                safety=data.get("safety") is True
                or str(data["reason"]).startswith(_SAFETY_REASON_BEFORE_THE_FLAG),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"incomplete manifest: {error}") from None


_SAFETY_REASON_BEFORE_THE_FLAG = "state replaced by transaction"


def _data_dir(data: object) -> DataDirSnapshot | DataDirArchive:
    if not isinstance(data, dict):
        raise TypeError("the data_dir entry is not an object")
    if data.get("format") == "snapshot":
        return DataDirSnapshot(**data)
    if data.get("format", "tar") == "tar":
        return DataDirArchive(**data)
    raise ValueError(f"unknown data dir format {data.get('format')!r}")


def _database_dump(data: object) -> DatabaseDump:
    if not isinstance(data, dict):
        raise TypeError("the database entry is not an object")
    relations = data.get("relations")
    if relations is not None:
        data = {**data, "relations": [(str(schema), str(name)) for schema, name in relations]}
    return DatabaseDump(**data)


def write_manifest(directory: Path, manifest: BackupManifest) -> None:
    content = json.dumps(manifest.to_json(), indent=2) + "\n"
    write_private_atomically(directory / MANIFEST_NAME, content.encode())


def read_manifest(directory: Path) -> BackupManifest:
    """Raises ``OSError`` when unreadable and ``ValueError`` when not a manifest."""
    data = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("manifest is not a JSON object")
    return BackupManifest.from_json(data)


def check_files(
    directory: Path,
    manifest: BackupManifest,
    done: BytesDone | None = None,
    *,
    read_snapshot: bool = True,
) -> None:
    """``BackupError`` unless the files in ``directory`` match the manifest: the dump's and the
    archive's size and sha256; for a snapshot its index's sha256, every file present with its
    size and, with ``read_snapshot``, every file's sha256."""
    recorded = [(manifest.database.file, manifest.database.size, manifest.database.sha256)]
    if isinstance(manifest.data_dir, DataDirArchive):
        archive = manifest.data_dir
        recorded.append((archive.file, archive.size, archive.sha256))
    for name, size, sha256 in recorded:
        _check_file(directory / name, size, sha256, manifest.id, done)
    if isinstance(manifest.data_dir, DataDirSnapshot):
        snapshot = manifest.data_dir
        try:
            check_snapshot(
                directory / snapshot.tree,
                directory / snapshot.index,
                snapshot.index_sha256,
                read_files=read_snapshot,
                done=done,
            )
        except BackupError as error:
            raise BackupError(f"backup {manifest.id}: {error}") from None


def _check_file(path: Path, size: int, sha256: str, backup_id: str, done: BytesDone | None) -> None:
    try:
        actual_size = path.stat().st_size
        if actual_size != size:
            raise BackupError(
                f"backup {backup_id}: {path} has {actual_size} bytes, the manifest says {size}"
            )
        actual = sha256_of(path, done)
    except OSError as error:
        raise BackupError(f"backup {backup_id}: cannot read {path}: {error}") from None
    if actual != sha256:
        raise BackupError(f"backup {backup_id}: {path} is corrupt (sha256 {actual})")
