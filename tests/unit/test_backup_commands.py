"""``specivod backups [--json]`` output, read from a backup directory without Docker."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from specivod.adapters.backup.manifest import (
    BackupManifest,
    DatabaseDump,
    DataDirArchive,
    Durations,
    write_manifest,
)
from specivod.commands.backups import list_backups
from specivod.settings import Settings


def settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "registry": {"image": "127.0.0.1:5000/specivo/specivo"},
            "deployment": {"project_dir": str(tmp_path / "project")},
            "backup": {"dir": str(tmp_path / "backups")},
        }
    )


def store(tmp_path: Path, backup_id: str, version: str) -> None:
    directory = tmp_path / "backups" / backup_id
    directory.mkdir(parents=True)
    write_manifest(
        directory,
        BackupManifest(
            id=backup_id,
            created_at=datetime(2025, 3, 1, 2, 0, tzinfo=UTC),
            version=version,
            reason="before upgrade to 0.2.0",
            database=DatabaseDump("database.dump", 3 << 20, "d" * 64, "custom"),
            data_dir=DataDirArchive("/srv/data", "data.tar", 1 << 20, "a" * 64, 12),
            fingerprint="sha256:" + "f" * 64,
            durations=Durations(1.0, 0.5, 1.5),
            valid=True,
        ),
    )


def test_json_is_one_object_with_every_backup_newest_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store(tmp_path, "20250301T020000Z", "0.1.10")
    store(tmp_path, "20250302T020000Z", "0.1.11")

    assert list_backups(settings(tmp_path), as_json=True) == 0

    payload = json.loads(capsys.readouterr().out)
    assert [b["id"] for b in payload["backups"]] == ["20250302T020000Z", "20250301T020000Z"]
    first = payload["backups"][0]
    assert first["version"] == "0.1.11" and first["valid"] is True
    assert first["size"] == (3 << 20) + (1 << 20)
    assert first["database"]["sha256"] == "d" * 64
    assert first["data_dir"]["file_count"] == 12


def test_table_names_id_version_size_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store(tmp_path, "20250301T020000Z", "0.1.10")

    assert list_backups(settings(tmp_path), as_json=False) == 0

    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:2] == ["ID", "CREATED"]
    assert row.split()[:4] == ["20250301T020000Z", "2025-03-01", "02:00:00", "0.1.10"]
    assert "4.0 MiB" in row and row.endswith("before upgrade to 0.2.0")


def test_no_backups_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert list_backups(settings(tmp_path), as_json=False) == 0
    assert capsys.readouterr().out.strip() == f"no backups in {tmp_path / 'backups'}"
