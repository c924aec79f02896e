"""Attack review of the sync restore (issue 10) on real file systems: a data dir that is a mount
point gets its replaced files copied onto the parent's file system, which nothing checks for room.
Needs root (mount); never skipped. The database side is the unit suite's scripted PostgreSQL:
what is attacked here is the data dir."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from specivod.domain.errors import BackupError
from tests.unit.test_backup_facade import DUMP, FakeCompose, make

MIB = 1 << 20


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    mount_point.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def mounted_data_dir(tmp_path: Path) -> Iterator[Path]:
    """``<small parent fs>/data``, itself a mount point with room to spare: a data volume
    mounted under a directory of the root file system."""
    if os.geteuid() != 0:
        pytest.fail("mounting file systems needs root")
    with tmpfs(tmp_path / "srv", "1m") as parent, tmpfs(parent / "data", "64m") as data:
        yield data


async def test_no_room_beside_a_mounted_data_dir_is_found_before_anything_changes(
    tmp_path: Path, mounted_data_dir: Path
) -> None:
    data = mounted_data_dir
    (data / "FORMAT").write_text("format 1\n")
    compose = FakeCompose(data)
    backups = make(tmp_path, compose)
    before = await backups.create(version="0.1.10", reason="before upgrade to 0.2.0")
    # The failed release rebuilt its search index: 8 MiB the backup does not have.
    (data / "search").mkdir()
    for number in range(8):
        (data / "search" / f"segment-{number}").write_bytes(os.urandom(MIB))

    with pytest.raises(BackupError, match="space"):
        await backups.prepare_restore(before.id)  # ROLLING_BACK, while the app still serves

    # Were it not refused, the restore would fail after replacing the database:
    with contextlib.suppress(Exception):
        await backups.restore(before.id, data_aside=backups.data_aside_path("tx9"))
    assert compose.restored != DUMP
