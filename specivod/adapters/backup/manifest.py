"""The manifest: one JSON file per backup saying what it holds, how big each file is, its sha256,
the deployed version and the schema fingerprint at backup time."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from specivod.adapters.backup.files import BytesDone, sha256_of, write_private_atomically
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
    data_dir: DataDirArchive
    fingerprint: str
    durations: Durations
    valid: bool

    @property
    def size(self) -> int:
        """Bytes on disk of the dump and the archive together."""
        return self.database.size + self.data_dir.size

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
                data_dir=DataDirArchive(**data["data_dir"]),
                fingerprint=str(data["fingerprint"]),
                durations=Durations(**data["durations"]),
                valid=data["valid"] is True,
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"incomplete manifest: {error}") from None


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


def check_files(directory: Path, manifest: BackupManifest, done: BytesDone | None = None) -> None:
    """``BackupError`` unless both files in ``directory`` have the size and sha256 recorded."""
    recorded = [
        (manifest.database.file, manifest.database.size, manifest.database.sha256),
        (manifest.data_dir.file, manifest.data_dir.size, manifest.data_dir.sha256),
    ]
    for name, size, sha256 in recorded:
        path = directory / name
        try:
            actual_size = path.stat().st_size
            if actual_size != size:
                raise BackupError(
                    f"backup {manifest.id}: {path} has {actual_size} bytes, the manifest "
                    f"says {size}"
                )
            actual = sha256_of(path, done)
        except OSError as error:
            raise BackupError(f"backup {manifest.id}: cannot read {path}: {error}") from None
        if actual != sha256:
            raise BackupError(f"backup {manifest.id}: {path} is corrupt (sha256 {actual})")
