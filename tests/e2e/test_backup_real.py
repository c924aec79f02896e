"""Backups against the real stack: PostgreSQL in the sandbox's ``db`` service, the data dir on
disk, docker compose in between, and the ``specivod`` command end to end."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
from pydantic import ByteSize

from sandbox.deployment import SandboxDeployment
from sandbox.images import FILES
from sandbox.releases import BASELINE
from specivod.adapters.backup.backups import Backups
from specivod.adapters.backup.manifest import DataDirSnapshot
from specivod.adapters.compose import ComposeDeployment
from specivod.domain.errors import BackupError
from specivod.settings import BackupSettings, DeploymentSettings
from tests.conftest import Specivod
from tests.support.trees import tree

pytestmark = pytest.mark.stack

CONNECTION = ["-h", "127.0.0.1", "-U", "specivo"]


def _compose(deployment: SandboxDeployment) -> ComposeDeployment:
    return ComposeDeployment(DeploymentSettings(project_dir=deployment.directory), environ={})


def _backups(deployment: SandboxDeployment, root: Path, **settings: object) -> Backups:
    values: dict[str, object] = {"dir": root / "backups", "keep": 3, "min_free_bytes": "10MB"}
    values.update(settings)
    return Backups(BackupSettings.model_validate(values), _compose(deployment))


def _enrich_data_dir(data_dir: Path) -> None:
    """Modes, owners, a symlink, a hard link and an empty directory for the archive to keep."""
    (data_dir / "empty").mkdir(mode=0o750)
    (data_dir / "index").mkdir()
    secret = data_dir / "index" / "segment.bin"
    secret.write_bytes(os.urandom(300_000))
    secret.chmod(0o640)
    os.chown(secret, 999, 999)
    (data_dir / "latest").symlink_to("attachments/file1.txt")
    os.link(data_dir / "attachments" / "file1.txt", data_dir / "attachments" / "hardlink.txt")


def _change_everything(deployment: SandboxDeployment) -> None:
    deployment.psql("UPDATE issues SET title = 'changed ' || id WHERE id % 3 = 0")
    deployment.psql("DELETE FROM issues WHERE id > 150")
    deployment.psql("INSERT INTO issues (title) VALUES ('written after the backup')")
    data_dir = deployment.data_dir
    (data_dir / "attachments" / "file2.txt").write_text("changed after the backup\n")
    (data_dir / "attachments" / "file3.txt").unlink()
    (data_dir / "attachments" / "new.txt").write_text("new after the backup\n")
    shutil.rmtree(data_dir / "empty")
    (data_dir / "FORMAT").chmod(0o600)


async def _restore_stopped(
    compose: ComposeDeployment, backups: Backups, backup_id: str
) -> Path | None:
    """Where the restore set aside what it replaced (``None``: the data dir had not changed)."""
    await compose.stop(await compose.app_services())
    result = await backups.restore(backup_id)
    await compose.up(BASELINE)
    return result.data_aside


async def test_restore_gives_back_the_same_rows_and_files(
    deployment: SandboxDeployment, tmp_path: Path
) -> None:
    _enrich_data_dir(deployment.data_dir)
    rows, files = deployment.table_checksum(), tree(deployment.data_dir)
    backups = _backups(deployment, tmp_path)

    manifest = await backups.create(version=BASELINE, reason="test")
    _change_everything(deployment)
    assert deployment.table_checksum() != rows
    changed_files = tree(deployment.data_dir)
    assert changed_files != files
    aside = await _restore_stopped(_compose(deployment), backups, manifest.id)

    assert deployment.table_checksum() == rows
    assert tree(deployment.data_dir) == files
    assert aside is not None
    assert aside.parent == deployment.data_dir.parent
    assert aside.name.startswith("data.replaced-")
    set_aside = {path: entry for path, entry in tree(aside).items() if (aside / path).is_file()}
    assert sorted(set_aside) == ["FORMAT", "attachments/file2.txt", "attachments/new.txt"]
    assert set_aside == {path: changed_files[path] for path in set_aside}


async def test_backup_files_are_private_and_described_by_the_manifest(
    deployment: SandboxDeployment, tmp_path: Path
) -> None:
    backups = _backups(deployment, tmp_path)
    manifest = await backups.create(version=BASELINE, reason="test")

    directory = backups.path(manifest.id)
    assert stat.S_IMODE(backups.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("database.dump", "data.index", "manifest.json"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((directory / "data").stat().st_mode) == 0o700
    dump = directory / "database.dump"
    assert dump.read_bytes()[:5] == b"PGDMP"
    assert manifest.database.sha256 == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert manifest.database.size == dump.stat().st_size
    snapshot = manifest.data_dir
    assert isinstance(snapshot, DataDirSnapshot)
    index = directory / "data.index"
    assert snapshot.index_sha256 == hashlib.sha256(index.read_bytes()).hexdigest()
    assert snapshot.file_count == len(deployment.data_hashes())
    assert manifest.data_dir.source == str(deployment.data_dir.resolve())
    assert (manifest.version, manifest.reason, manifest.valid) == (BASELINE, "test", True)
    assert manifest.fingerprint == await backups.fingerprint()
    assert backups.list() == [manifest]
    assert json.loads((directory / "manifest.json").read_text())["id"] == manifest.id


async def test_restore_after_a_migration_brings_the_old_schema_back(
    deployment: SandboxDeployment, tmp_path: Path
) -> None:
    """What a rollback does after a release migrated: new columns and a new table that
    references an old one must not stop the restore."""
    rows, version = deployment.table_checksum(), deployment.schema_version()
    backups = _backups(deployment, tmp_path)
    manifest = await backups.create(version=BASELINE, reason="before upgrade")
    for number in (2, 3):
        deployment.psql((FILES / "migrations" / f"{number}.sql").read_text())
        deployment.psql(f"INSERT INTO schema_migrations VALUES ({number})")
    deployment.psql("INSERT INTO labels (issue_id, name) VALUES (1, 'bug')")
    assert await backups.fingerprint() != manifest.fingerprint

    await _restore_stopped(_compose(deployment), backups, manifest.id)

    assert deployment.schema_version() == version
    assert deployment.table_checksum() == rows
    assert await backups.fingerprint() == manifest.fingerprint


@pytest.mark.parametrize("leftover", [True, False], ids=["leftover-table", "no-leftover"])
async def test_a_restore_that_fails_changes_nothing(
    deployment: SandboxDeployment, tmp_path: Path, leftover: bool
) -> None:
    """A dump the server cannot replay (the owner of one of its tables is gone): the table the
    backup lacks is not dropped and no row or file changes, because the drop of leftovers and the
    restore are one transaction (and without leftovers, pg_restore's own transaction)."""
    _enrich_data_dir(deployment.data_dir)
    deployment.psql("CREATE ROLE ghost")
    deployment.psql("CREATE TABLE haunted (id int); ALTER TABLE haunted OWNER TO ghost")
    backups = _backups(deployment, tmp_path)
    manifest = await backups.create(version=BASELINE, reason="test")
    deployment.psql("DROP TABLE haunted; DROP ROLE ghost")
    if leftover:
        deployment.psql("CREATE TABLE added_later (id int); INSERT INTO added_later VALUES (7)")
    _change_everything(deployment)
    rows, files = deployment.table_checksum(), tree(deployment.data_dir)
    compose = _compose(deployment)
    await compose.stop(await compose.app_services())

    with pytest.raises(
        BackupError,
        match=r"rolled back, the database is unchanged: .*role \"ghost\" does not exist",
    ):
        await backups.restore(manifest.id)

    if leftover:
        assert deployment.psql("SELECT id FROM added_later") == "7"
    assert deployment.table_checksum() == rows
    assert tree(deployment.data_dir) == files
    assert not any(".restoring-" in path.name for path in deployment.data_dir.parent.iterdir())


@pytest.mark.parametrize(
    "dump_command",
    [
        pytest.param(["pg_dump", "-Fc", *CONNECTION, "-d", "no_such_database"], id="no-database"),
        pytest.param(
            ["sh", "-c", "pg_dump -Fc -h 127.0.0.1 -U specivo -d specivo; exit 3"],
            id="exit-3-after-a-whole-dump",
        ),
        pytest.param(["true"], id="empty-output"),
        pytest.param(["echo", "not a dump"], id="not-an-archive"),
    ],
)
async def test_a_failed_dump_leaves_no_valid_backup(
    deployment: SandboxDeployment, tmp_path: Path, dump_command: list[str]
) -> None:
    good = await _backups(deployment, tmp_path).create(version=BASELINE, reason="good")
    failing = _backups(deployment, tmp_path, dump_command=dump_command)

    with pytest.raises(BackupError):
        await failing.create(version=BASELINE, reason="doomed")

    assert [manifest.id for manifest in failing.list()] == [good.id]
    assert sorted(path.name for path in failing.directory.iterdir()) == [good.id]


async def test_fingerprint_follows_the_schema_not_the_rows(
    deployment: SandboxDeployment, tmp_path: Path
) -> None:
    backups = _backups(deployment, tmp_path)
    before = await backups.fingerprint()

    deployment.psql("INSERT INTO issues (title) SELECT 'more ' || n FROM generate_series(1, 500) n")
    deployment.psql("UPDATE issues SET body = 'edited'; DELETE FROM issues WHERE id < 10")
    after_rows = await backups.fingerprint()
    deployment.psql("ALTER TABLE issues ADD COLUMN due date")
    after_schema = await backups.fingerprint()

    assert before.startswith("sha256:")
    assert after_rows == before
    assert after_schema != before


async def test_configured_fingerprint_query_is_used(
    deployment: SandboxDeployment, tmp_path: Path
) -> None:
    query = "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"
    backups = _backups(deployment, tmp_path, fingerprint_query=query)
    before = await backups.fingerprint()

    deployment.psql("ALTER TABLE issues ADD COLUMN unrecorded int")
    unrecorded = await backups.fingerprint()
    deployment.psql("INSERT INTO schema_migrations VALUES (99)")

    assert unrecorded == before
    assert await backups.fingerprint() != before


async def test_too_little_free_space_refuses_to_start(
    deployment: SandboxDeployment, tmp_path: Path
) -> None:
    disk = shutil.disk_usage(tmp_path)
    backups = _backups(deployment, tmp_path, min_free_bytes=ByteSize(disk.total))

    with pytest.raises(
        BackupError, match=r"GiB\) free, \d+ bytes \([0-9.]+ GiB\) needed"
    ) as refused:
        await backups.create(version=BASELINE, reason="test")

    assert str(disk.total) in str(refused.value)
    assert list(backups.directory.iterdir()) == []


async def test_retention_keeps_the_newest_and_the_protected(
    deployment: SandboxDeployment, tmp_path: Path
) -> None:
    backups = _backups(deployment, tmp_path, keep=2)
    first = await backups.create(version=BASELINE, reason="1")
    second = await backups.create(version=BASELINE, reason="2")
    third = await backups.create(version=BASELINE, reason="3", protect=[first.id])
    fourth = await backups.create(version=BASELINE, reason="4")

    assert [manifest.id for manifest in backups.list()] == [fourth.id, third.id]
    assert not backups.path(first.id).exists()
    assert not backups.path(second.id).exists()


def _wait_for_version(deployment: SandboxDeployment, version: str, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while deployment.running_version() != version:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_cli_backup_list_and_restore(specivod: Specivod, deployment: SandboxDeployment) -> None:
    _enrich_data_dir(deployment.data_dir)
    rows, files = deployment.table_checksum(), tree(deployment.data_dir)

    created = specivod("backup")
    assert created.returncode == 0, created.stderr
    listed = specivod("backups", "--json")
    assert listed.returncode == 0, listed.stderr
    backups = json.loads(listed.stdout)["backups"]
    assert len(backups) == 1 and backups[0]["version"] == BASELINE and backups[0]["valid"]
    backup_id = backups[0]["id"]
    assert f"backup {backup_id} created" in created.stdout
    _change_everything(deployment)

    restored = specivod("restore", backup_id)

    assert restored.returncode == 0, restored.stderr
    assert deployment.table_checksum() == rows
    assert tree(deployment.data_dir) == files
    aside = next(deployment.directory.glob("data.replaced-*"))
    assert f"replaced data dir kept at {aside}" in restored.stdout
    assert _wait_for_version(deployment, BASELINE)
    table = specivod("backups")
    assert table.returncode == 0 and backup_id in table.stdout


def test_cli_restore_of_an_unknown_backup_fails_without_stopping_the_app(
    specivod: Specivod, deployment: SandboxDeployment
) -> None:
    def started() -> tuple[object, object]:
        state = deployment.api_container()["State"]
        assert isinstance(state, dict)
        return state["Status"], state["StartedAt"]

    before = started()

    result = specivod("restore", "20000101T000000Z")

    assert result.returncode == 1
    assert "no backup 20000101T000000Z" in result.stdout + result.stderr
    assert started() == before == ("running", before[1])
