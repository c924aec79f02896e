"""Disk and database trouble at backup time, on the real stack (issue 13, items 2 and 3).

A backup directory on a small file system that fills during the dump or, the dump having fitted,
during the data dir snapshot (the free-space estimate, made from the last dump, passes both
times), and a database service that is stopped: each way the upgrade
never starts — nothing pulled or pinned, ``.env`` byte for byte as it was, the old containers
still running, the rows unchanged — nothing but the earlier backups is left in ``backup.dir``,
the exit code is 1 and the message says what is wrong and where. ``specivod backup`` alone the
same. Needs root (mount); never skipped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.deployment import SandboxDeployment
from sandbox.releases import BASELINE, HEALTHY_UPGRADE
from tests.conftest import Specivod, SpecivodFactory
from tests.e2e.test_attack_snapshots_real import tmpfs

pytestmark = pytest.mark.stack

STOPPED_DB = 'the database service "db" is not running'

ROOMY_FS = "12m"
"""Room for a first backup's estimate (``pg_database_size``, about 8 MB, when there is no dump
yet to go by)."""
SMALL_FS = "3m"
"""What the file system is shrunk to after the first backup (its dump is a few KB)."""
ROW_BYTES = 4096
"""Each grown row holds this much random hex: about 2.3 KB of dump."""


@dataclass(frozen=True)
class Untouched:
    """What an upgrade that never started must leave as it was."""

    env: bytes
    rows: str
    files: dict[str, str]
    api: tuple[object, object]

    @classmethod
    def of(cls, deployment: SandboxDeployment) -> Untouched:
        return cls(
            deployment.env_file.read_bytes(),
            deployment.table_checksum(),
            deployment.data_hashes(),
            _api_identity(deployment),
        )

    def assert_kept(self, deployment: SandboxDeployment) -> None:
        assert deployment.env_file.read_bytes() == self.env
        assert _api_identity(deployment) == self.api, "the api container was recreated"
        assert deployment.running_version() == BASELINE
        assert deployment.table_checksum() == self.rows
        assert deployment.data_hashes() == self.files


def _api_identity(deployment: SandboxDeployment) -> tuple[object, object]:
    container = deployment.api_container()
    state = container["State"]
    assert isinstance(state, dict)
    return container["Id"], state["StartedAt"]


@pytest.fixture
def small_backup_dir(tmp_path: Path) -> Iterator[Path]:
    """``backup.dir`` on a file system of its own, roomy until ``_first_backup_then_shrink``."""
    if os.geteuid() != 0:
        pytest.fail("mounting a file system needs root")
    with tmpfs(tmp_path / "small", ROOMY_FS) as mount_point:
        yield mount_point / "backups"


def _first_backup_then_shrink(specivod: Specivod, backup_dir: Path) -> set[str]:
    """A first backup while the database is small; then its file system shrunk to
    ``SMALL_FS``; what ``backup_dir`` holds."""
    first = specivod("backup")
    assert first.returncode == 0, first.stdout + first.stderr
    subprocess.run(["mount", "-o", f"remount,size={SMALL_FS}", str(backup_dir.parent)], check=True)
    return _entries(backup_dir)


def _transactions(specivod: Specivod) -> list[dict[str, object]]:
    result = specivod("history", "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["transactions"])


def _states_shown(output: str) -> list[str]:
    """The states an upgrade printed as it journaled them (``[16:09:53] PLANNED  ...``)."""
    return re.findall(r"^\[[\d:]+\] ([A-Z_]+) ", output, flags=re.MULTILINE)


def _entries(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()} if directory.is_dir() else set()


def _grow_database(deployment: SandboxDeployment, rows: int) -> None:
    deployment.psql(
        "INSERT INTO issues (title, body) SELECT 'grown ' || n, "
        "(SELECT string_agg(md5(random()::text || n || k), '') "
        f"FROM generate_series(1, {ROW_BYTES // 32}) k) "
        f"FROM generate_series(1, {rows}) n"
    )


def test_dump_filling_the_backup_fs_stops_the_upgrade_before_it_starts(
    deployment: SandboxDeployment, specivod_with: SpecivodFactory, small_backup_dir: Path
) -> None:
    specivod = specivod_with(backup={"dir": str(small_backup_dir), "min_free_bytes": "64KiB"})
    earlier = _first_backup_then_shrink(specivod, small_backup_dir)
    _grow_database(deployment, rows=2000)  # a dump of about 4.5 MB
    before = Untouched.of(deployment)

    upgraded = specivod("upgrade", "--now", "--to", HEALTHY_UPGRADE)
    alone = specivod("backup")

    assert upgraded.returncode == 1, upgraded.stdout + upgraded.stderr
    assert _states_shown(upgraded.stdout) == ["PLANNED", "BACKING_UP", "ABORTED"]
    (transaction,) = _transactions(specivod)
    assert (transaction["state"], transaction["backup_id"]) == ("aborted", None)
    _assert_names_the_shortage(str(transaction["reason"]), small_backup_dir)
    assert alone.returncode == 1, alone.stdout + alone.stderr
    _assert_names_the_shortage(alone.stderr, small_backup_dir)
    assert _entries(small_backup_dir) == earlier
    before.assert_kept(deployment)


def _assert_names_the_shortage(message: str, directory: Path) -> None:
    assert str(directory) in message, message
    assert re.search(r"filled up after \d+ bytes", message), message
    assert re.search(r"needs more than that: the database takes \d+ bytes", message), message


def test_a_stopped_database_is_refused_before_anything_changes(
    deployment: SandboxDeployment, specivod: Specivod, tmp_path: Path
) -> None:
    first = specivod("backup")
    assert first.returncode == 0, first.stdout + first.stderr
    backups = tmp_path / "backups"
    earlier = _entries(backups)
    before = Untouched.of(deployment)
    deployment.compose("stop", "db")
    try:
        upgraded = specivod("upgrade", "--now", "--to", HEALTHY_UPGRADE)
        alone = specivod("backup")
    finally:
        deployment.compose("up", "-d", "--wait", "db")

    assert upgraded.returncode == 1, upgraded.stdout + upgraded.stderr
    assert _states_shown(upgraded.stdout) == ["PLANNED", "BACKING_UP", "ABORTED"]
    (transaction,) = _transactions(specivod)
    assert (transaction["state"], transaction["backup_id"]) == ("aborted", None)
    assert STOPPED_DB in str(transaction["reason"])
    assert alone.returncode == 1, alone.stdout + alone.stderr
    assert STOPPED_DB in alone.stderr
    assert _entries(backups) == earlier
    before.assert_kept(deployment)


def _fill_until_the_snapshot_does_not_fit(
    deployment: SandboxDeployment, specivod: Specivod, backup_dir: Path
) -> set[str]:
    """A first backup, then a data dir file the estimate counts (2 MiB) and a database whose
    dump (about 1.4 MB, estimated from the first one at a few KB) fits but leaves no room for
    that file; what ``backup_dir`` held before."""
    earlier = _first_backup_then_shrink(specivod, backup_dir)
    (deployment.data_dir / "index.bin").write_bytes(os.urandom(2 << 20))
    _grow_database(deployment, rows=600)
    return earlier


def test_a_snapshot_filling_the_backup_fs_leaves_no_partial_backup(
    deployment: SandboxDeployment, specivod_with: SpecivodFactory, small_backup_dir: Path
) -> None:
    specivod = specivod_with(backup={"dir": str(small_backup_dir), "min_free_bytes": "64KiB"})
    earlier = _fill_until_the_snapshot_does_not_fit(deployment, specivod, small_backup_dir)
    before = Untouched.of(deployment)

    upgraded = specivod("upgrade", "--now", "--to", HEALTHY_UPGRADE)

    assert upgraded.returncode == 1, upgraded.stdout + upgraded.stderr
    assert "data dir snapshot" in upgraded.stderr, "the dump fitted, the snapshot began"
    assert _states_shown(upgraded.stdout) == ["PLANNED", "BACKING_UP", "ABORTED"]
    (transaction,) = _transactions(specivod)
    assert (transaction["state"], transaction["backup_id"]) == ("aborted", None)
    assert "No space left on device" in str(transaction["reason"])
    assert _entries(small_backup_dir) == earlier
    before.assert_kept(deployment)


def test_a_snapshot_that_does_not_fit_names_the_directory_and_the_room_needed(
    deployment: SandboxDeployment, specivod_with: SpecivodFactory, small_backup_dir: Path
) -> None:
    specivod = specivod_with(backup={"dir": str(small_backup_dir), "min_free_bytes": "64KiB"})
    earlier = _fill_until_the_snapshot_does_not_fit(deployment, specivod, small_backup_dir)

    alone = specivod("backup")

    assert alone.returncode == 1, alone.stdout + alone.stderr
    assert _entries(small_backup_dir) == earlier
    assert "data dir snapshot" in alone.stderr, "the dump fitted, the snapshot began"
    assert str(small_backup_dir) in alone.stderr, alone.stderr
    assert re.search(r"\d+ bytes.* needed", alone.stderr), alone.stderr
