"""``Backups`` with a hand-written fake of the compose project: what reaches the container, what
lands on disk, and what is left after each kind of failure."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest

import specivod.adapters.backup.backups as backup_package
from specivod.adapters.backup import datadir
from specivod.adapters.backup.backups import Backups
from specivod.adapters.backup.manifest import DataDirSnapshot
from specivod.adapters.process import Completed
from specivod.domain.errors import BackupError
from specivod.engine import ports
from specivod.settings import BackupSettings
from tests.support.trees import tree

DUMP = b"PGDMP" + bytes(range(256)) * 40
SCHEMA = b"""--
-- PostgreSQL database dump
-- Dumped from database version 15.20
\\restrict abc123
SET statement_timeout = 0;

CREATE TABLE public.issues (id integer NOT NULL, title text NOT NULL);
\\unrestrict abc123
"""
TABLE_OF_CONTENTS = (
    ";\n; Archive created at 2025-03-01\n215; 1259 16386 TABLE public issues specivo\n"
)


class FakeClock:
    def __init__(self) -> None:
        self.moment = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)

    def now(self) -> datetime:
        self.moment += timedelta(seconds=1)
        return self.moment

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("backups never sleep")


@dataclass
class FakeCompose:
    """``docker compose exec -T db ...`` answered by scripted PostgreSQL tools."""

    data: Path | None
    dump: bytes = DUMP
    dump_exit: int = 0
    schema: bytes = SCHEMA
    table_of_contents: str = TABLE_OF_CONTENTS
    query_output: str = "5000\n"
    restore_exit: int = 0
    calls: list[tuple[str, ...]] = field(default_factory=list)
    restored: bytes = b""

    def data_dir(self) -> Path | None:
        return self.data

    async def compose(
        self,
        *arguments: str,
        version: str | None = None,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        assert arguments[:3] == ("exec", "-T", "db"), arguments
        command = arguments[3:]
        self.calls.append(command)
        if command[0] == "pg_dump" and "--schema-only" in command:
            return self._answer(command, stdout, self.schema)
        if command[0] == "pg_dump" or command[0] == "custom-dump":
            return self._answer(command, stdout, self.dump, self.dump_exit)
        if command[:2] == ("pg_restore", "--list"):
            assert stdin is not None
            ok = stdin.read(5) == b"PGDMP"
            return Completed(command, 0 if ok else 1, self.table_of_contents if ok else "", "")
        if command[0] == "pg_restore" or command[:2] == ("sh", "-c"):
            assert stdin is not None
            self.restored = stdin.read()
            return Completed(command, self.restore_exit, "", "pg_restore: error: boom")
        if command[0] == "psql":
            return Completed(command, 0, self.query_output, "")
        raise AssertionError(f"unexpected command {command}")

    @staticmethod
    def _answer(
        command: tuple[str, ...], stdout: IO[bytes] | None, content: bytes, code: int = 0
    ) -> Completed:
        assert stdout is not None, "output must be streamed to a file"
        stdout.write(content)
        stdout.flush()
        return Completed(command, code, "", "pg_dump: error: connection lost" if code else "")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "project" / "data"
    (root / "attachments").mkdir(parents=True)
    (root / "attachments" / "one.txt").write_text("one\n" * 100)
    (root / "FORMAT").write_text("format 1\n")
    return root


def bytes_under(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def resolved(path: Path) -> Path:
    return path.resolve()


def make(tmp_path: Path, compose: FakeCompose, **settings: object) -> Backups:
    values: dict[str, object] = {"dir": tmp_path / "backups", "keep": 2, "min_free_bytes": 1}
    values.update(settings)
    return Backups(BackupSettings.model_validate(values), compose, FakeClock())


async def test_create_writes_a_complete_private_backup(tmp_path: Path, data_dir: Path) -> None:
    compose = FakeCompose(data_dir)
    backups = make(tmp_path, compose)
    seen: list[str] = []

    manifest = await backups.create(
        version="0.1.10", reason="before upgrade to 0.2.0", progress=lambda p, d, t: seen.append(p)
    )

    directory = backups.path(manifest.id)
    assert sorted(p.name for p in backups.directory.iterdir()) == [manifest.id]
    assert (directory / "database.dump").read_bytes() == DUMP
    assert manifest.database.sha256 == hashlib.sha256(DUMP).hexdigest()
    assert manifest.database.size == len(DUMP)
    assert (manifest.database.format, manifest.data_dir.file_count) == ("custom", 2)
    assert (manifest.version, manifest.reason, manifest.valid) == (
        "0.1.10",
        "before upgrade to 0.2.0",
        True,
    )
    for name in ("database.dump", "data.index", "manifest.json"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    for private in (directory, directory / "data"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
    copied, live = tree(directory / "data"), tree(data_dir)
    assert copied.pop(".") != live.pop("."), "the snapshot's root is private, not the data dir's"
    assert copied == live
    assert backups.list() == [manifest]
    assert {"database dump", "checksum", "data dir snapshot"} <= set(seen)
    dump_call = next(c for c in compose.calls if c[0] == "pg_dump" and "-Fc" in c)
    assert dump_call[dump_call.index("-U") + 1] == "specivo"
    assert dump_call[-2:] == ("-d", "specivo")


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ({"dump_exit": 1}, "database dump failed"),
        ({"dump": b""}, "database dump is empty"),
        ({"dump": b"garbage that is not an archive"}, "not a valid archive"),
        ({"table_of_contents": ";\n; nothing\n"}, "empty table of contents"),
    ],
    ids=["exit-1-after-bytes", "empty", "not-an-archive", "empty-toc"],
)
async def test_a_failed_dump_leaves_no_backup(
    tmp_path: Path, data_dir: Path, failure: dict[str, object], message: str
) -> None:
    good = await make(tmp_path, FakeCompose(data_dir)).create(version="0.1.10", reason="ok")
    failing = make(tmp_path, FakeCompose(data_dir, **failure))  # type: ignore[arg-type]

    with pytest.raises(BackupError, match=message):
        await failing.create(version="0.1.10", reason="doomed")

    assert [m.id for m in failing.list()] == [good.id]
    assert sorted(p.name for p in failing.directory.iterdir()) == [good.id]


async def test_a_configured_dump_command_is_run_as_given(tmp_path: Path, data_dir: Path) -> None:
    compose = FakeCompose(data_dir)
    backups = make(tmp_path, compose, dump_command=["custom-dump", "--all"])

    manifest = await backups.create(version=None, reason="manual")

    assert ("custom-dump", "--all") in compose.calls
    assert manifest.database.format == "configured"


async def test_leftovers_of_a_killed_run_are_ignored_then_removed(
    tmp_path: Path, data_dir: Path
) -> None:
    backups = make(tmp_path, FakeCompose(data_dir))
    leftover = tmp_path / "backups" / "20250301T000000Z.partial"
    leftover.mkdir(parents=True)
    (leftover / "database.dump").write_bytes(b"PGDMP half")

    assert backups.list() == []
    manifest = await backups.create(version="0.1.10", reason="manual")

    assert not leftover.exists()
    assert [m.id for m in backups.list()] == [manifest.id]


async def test_without_a_previous_backup_free_space_is_estimated(
    tmp_path: Path, data_dir: Path
) -> None:
    compose = FakeCompose(data_dir, query_output="5000\n")
    backups = make(tmp_path, compose, min_free_bytes=1 << 60)

    estimate = await backups.estimate()
    with pytest.raises(BackupError, match="not enough free space") as refused:
        await backups.create(version="0.1.10", reason="manual")

    assert estimate.database_bytes == 5000
    assert estimate.data.bytes_to_copy == bytes_under(data_dir)
    assert f"expected backup size {estimate.bytes_needed} " in str(refused.value)
    assert f"min_free_bytes {1 << 60}" in str(refused.value)
    assert list(backups.directory.iterdir()) == []


async def test_with_a_previous_backup_free_space_expects_its_dump_and_the_changed_files(
    tmp_path: Path, data_dir: Path
) -> None:
    first = await make(tmp_path, FakeCompose(data_dir)).create(version="0.1.10", reason="ok")
    (data_dir / "FORMAT").write_text("format 2, longer\n")
    compose = FakeCompose(data_dir)
    backups = make(tmp_path, compose, min_free_bytes=1 << 60)

    estimate = await backups.estimate()
    with pytest.raises(BackupError, match=f"expected backup size {estimate.bytes_needed} "):
        await backups.create(version="0.1.10", reason="manual")

    assert (estimate.base, estimate.database_bytes) == (first.id, first.database.size)
    assert (estimate.data.files_to_copy, estimate.data.bytes_to_copy) == (
        1,
        len("format 2, longer\n"),
    )
    assert estimate.data.bytes_total == bytes_under(data_dir)
    assert not any("pg_database_size" in " ".join(call) for call in compose.calls)


async def test_retention_runs_after_each_backup_and_spares_protected_ids(
    tmp_path: Path, data_dir: Path
) -> None:
    backups = make(tmp_path, FakeCompose(data_dir), keep=1)
    first = await backups.create(version="0.1.10", reason="1")
    second = await backups.create(version="0.1.10", reason="2", protect=[first.id])

    assert [m.id for m in backups.list()] == [second.id, first.id]

    third = await backups.create(version="0.1.10", reason="3")

    assert [m.id for m in backups.list()] == [third.id]
    assert backups.prune(0) == [third.id]


async def test_retention_never_deletes_the_backup_it_just_made(
    tmp_path: Path, data_dir: Path
) -> None:
    """Even when the clock went back and the new id sorts before the kept ones."""
    clock = FakeClock()
    backups = Backups(
        BackupSettings.model_validate({"dir": tmp_path / "backups", "keep": 1}),
        FakeCompose(data_dir),
        clock,
    )
    newer = await backups.create(version="0.1.10", reason="before the clock went back")
    clock.moment -= timedelta(hours=1)

    older = await backups.create(version="0.1.10", reason="after", protect=[newer.id])

    assert older.id < newer.id
    assert [m.id for m in backups.list()] == [newer.id, older.id]


async def test_files_that_vanish_while_snapshotted_are_counted_in_the_manifest(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (data_dir / "attachments" / "temp-upload").write_text("half an upload\n")
    take = backup_package.take_snapshot

    def take_while_an_upload_vanishes(*arguments: Any, **keywords: Any) -> Any:
        def seen(path: Path) -> None:
            if path.name == "temp-upload":  # stat'ed, then gone before it is read
                path.unlink()

        return take(*arguments, **keywords, seen=seen)

    monkeypatch.setattr(backup_package, "take_snapshot", take_while_an_upload_vanishes)
    backups = make(tmp_path, FakeCompose(data_dir))
    manifest = await backups.create(version="0.1.10", reason="busy")

    snapshot = manifest.data_dir
    assert isinstance(snapshot, DataDirSnapshot)
    assert (snapshot.vanished_while_archived, snapshot.changed_while_archived) == (1, 0)
    assert snapshot.file_count == 2
    assert backups.list() == [manifest]


async def test_manifests_of_older_versions_still_load_and_restore(
    tmp_path: Path, data_dir: Path
) -> None:
    """Without the archive counts and the dump's relations: the restore reads them from the
    dump's table of contents."""
    compose = FakeCompose(data_dir)
    backups = make(tmp_path, compose)
    manifest = await backups.create(version="0.1.10", reason="old")
    assert manifest.database.relations == [("public", "issues")]
    path = backups.path(manifest.id) / "manifest.json"
    written = json.loads(path.read_text())
    del written["data_dir"]["vanished_while_archived"]
    del written["data_dir"]["changed_while_archived"]
    del written["database"]["relations"]
    path.write_text(json.dumps(written))
    compose.calls.clear()

    loaded = backups.get(manifest.id)
    await backups.restore(manifest.id)

    assert loaded.database.relations is None
    assert replace(loaded, database=manifest.database) == manifest
    assert [call[0] for call in compose.calls] == ["pg_restore", "sh"]
    assert "('public', 'issues')" in compose.calls[1][5]


async def test_restore_replaces_database_then_swaps_the_data_dir(
    tmp_path: Path, data_dir: Path
) -> None:
    compose = FakeCompose(data_dir)
    backups = make(tmp_path, compose)
    manifest = await backups.create(version="0.1.10", reason="manual")
    (data_dir / "FORMAT").write_text("format 3\n")
    compose.calls.clear()

    result = await backups.restore(manifest.id)

    assert compose.restored == DUMP
    commands = [call[0] for call in compose.calls]
    assert commands == ["sh"], "the relations come from the manifest, not another --list"
    script, check_sql, drop_sql = compose.calls[0][2], compose.calls[0][4], compose.calls[0][5]
    assert "pg_restore --clean --if-exists --single-transaction -f -" in script
    assert "exec pg_restore --clean --if-exists --single-transaction" in script
    assert check_sql.startswith("SELECT count(*)") and "('public', 'issues')" in check_sql
    assert "ON_ERROR_STOP=1" in script
    assert script.index("BEGIN") < script.index(
        "pg_restore --clean --if-exists --single-transaction -f -"
    )
    assert "('public', 'issues')" in drop_sql
    assert (data_dir / "FORMAT").read_text() == "format 1\n"
    assert result.data_aside is not None
    assert (result.data_aside / "FORMAT").read_text() == "format 3\n"
    assert result.data_aside.name.startswith("data.replaced-")
    assert result.data_dir == resolved(data_dir)


async def test_a_configured_restore_command_runs_after_the_drop(
    tmp_path: Path, data_dir: Path
) -> None:
    compose = FakeCompose(data_dir)
    restore_command = ["pg_restore", "--clean", "-d", "specivo"]
    backups = make(tmp_path, compose, restore_command=restore_command)
    manifest = await backups.create(version="0.1.10", reason="manual")
    compose.calls.clear()

    await backups.restore(manifest.id)

    assert [call[0] for call in compose.calls] == ["psql", "pg_restore"]
    assert "('public', 'issues')" in compose.calls[0][-1]
    assert list(compose.calls[1]) == restore_command
    assert compose.restored == DUMP


async def test_a_failed_database_restore_leaves_the_data_dir_alone(
    tmp_path: Path, data_dir: Path
) -> None:
    compose = FakeCompose(data_dir, restore_exit=1)
    backups = make(tmp_path, compose)
    manifest = await backups.create(version="0.1.10", reason="manual")
    (data_dir / "FORMAT").write_text("format 3\n")

    with pytest.raises(
        BackupError, match=r"(?s)database restore failed.*boom.*data dir was not touched"
    ):
        await backups.restore(manifest.id)

    assert (data_dir / "FORMAT").read_text() == "format 3\n"
    assert sorted(p.name for p in data_dir.parent.iterdir()) == ["data"]


@pytest.mark.parametrize("damaged", ["database.dump", "data/FORMAT", "data.index"])
async def test_a_corrupt_backup_is_refused_before_anything_changes(
    tmp_path: Path, data_dir: Path, damaged: str
) -> None:
    compose = FakeCompose(data_dir)
    backups = make(tmp_path, compose)
    manifest = await backups.create(version="0.1.10", reason="manual")
    (data_dir / "FORMAT").write_text("format 3\n")  # the restore must copy the old one back
    path = backups.path(manifest.id) / damaged
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    compose.calls.clear()

    with pytest.raises(BackupError, match="corrupt"):
        await backups.restore(manifest.id)

    assert compose.calls == []
    assert sorted(p.name for p in data_dir.parent.iterdir()) == ["data"]
    assert (data_dir / "FORMAT").read_text() == "format 3\n"


async def test_fingerprint_ignores_comments_and_the_restrict_key(
    tmp_path: Path, data_dir: Path
) -> None:
    first = await make(tmp_path, FakeCompose(data_dir)).fingerprint()
    other_key = SCHEMA.replace(b"abc123", b"zzz999").replace(b"15.20", b"15.21")
    same = await make(tmp_path, FakeCompose(data_dir, schema=other_key)).fingerprint()
    altered = SCHEMA.replace(b"title text", b"title varchar")
    changed = await make(tmp_path, FakeCompose(data_dir, schema=altered)).fingerprint()

    assert first.startswith("sha256:")
    assert same == first
    assert changed != first


async def test_fingerprint_query_hashes_the_query_output(tmp_path: Path, data_dir: Path) -> None:
    compose = FakeCompose(data_dir, query_output="1\n2\n3\n")
    backups = make(tmp_path, compose, fingerprint_query="SELECT version FROM schema_migrations")

    fingerprint = await backups.fingerprint()

    assert fingerprint == "sha256:" + hashlib.sha256(b"1\n2\n3").hexdigest()
    assert compose.calls[-1][-1] == "SELECT version FROM schema_migrations"


async def test_no_data_dir_in_the_env_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="names no data dir"):
        await make(tmp_path, FakeCompose(None)).create(version=None, reason="manual")


class FrozenClock(FakeClock):
    def now(self) -> datetime:
        return self.moment


def test_the_data_aside_path_is_a_free_sibling_named_by_time_and_label(
    tmp_path: Path, data_dir: Path
) -> None:
    backups = Backups(
        BackupSettings.model_validate({"dir": tmp_path / "backups"}),
        FakeCompose(data_dir),
        FrozenClock(),
    )

    path = backups.data_aside_path("tx42")

    assert path == data_dir.resolve().with_name("data.replaced-20250301T020000Z-tx42")
    assert sorted(p.name for p in data_dir.parent.iterdir()) == ["data"]
    path.mkdir()
    assert backups.data_aside_path("tx42") == path.with_name(path.name + "-1")
    for label in ("", "..", "a/b"):
        with pytest.raises(BackupError, match="cannot name"):
            backups.data_aside_path(label)


async def _backed_up_then_changed(tmp_path: Path, data_dir: Path) -> tuple[Backups, str]:
    backups = make(tmp_path, FakeCompose(data_dir))
    manifest = await backups.create(version="0.1.10", reason="manual")
    (data_dir / "FORMAT").write_text("format 3\n")
    (data_dir / "written-later.txt").write_text("new\n")
    return backups, manifest.id


async def test_restore_copies_back_what_differs_and_sets_aside_what_it_replaces(
    tmp_path: Path, data_dir: Path
) -> None:
    before = tree(data_dir)
    backups, backup_id = await _backed_up_then_changed(tmp_path, data_dir)
    untouched = (data_dir / "attachments" / "one.txt").stat().st_ino
    aside = backups.data_aside_path("tx42")

    result = await backups.restore(backup_id, data_aside=aside)

    assert result.data_aside == aside
    assert tree(data_dir) == before
    assert sorted(path.name for path in aside.iterdir()) == ["FORMAT", "written-later.txt"]
    assert (aside / "FORMAT").read_text() == "format 3\n"
    assert (aside / "written-later.txt").read_text() == "new\n"
    assert (data_dir / "attachments" / "one.txt").stat().st_ino == untouched, "copied anyway"
    assert sorted(p.name for p in data_dir.parent.iterdir()) == ["data", aside.name]


async def test_a_restore_resumed_with_the_same_aside_changes_nothing_more(
    tmp_path: Path, data_dir: Path
) -> None:
    backups, backup_id = await _backed_up_then_changed(tmp_path, data_dir)
    aside = backups.data_aside_path("tx42")
    await backups.restore(backup_id, data_aside=aside)
    restored, replaced = tree(data_dir), tree(aside)
    compose = FakeCompose(data_dir)

    result = await make(tmp_path, compose).restore(backup_id, data_aside=aside)

    assert result.data_aside == aside
    assert (tree(data_dir), tree(aside)) == (restored, replaced)
    assert compose.restored == DUMP


async def _legacy_backup(backups: Backups, data_dir: Path) -> str:
    """A backup as specivod wrote them before snapshots: the data dir in one tar archive."""
    manifest = await backups.create(version="0.1.10", reason="manual")
    directory = backups.path(manifest.id)
    summary = datadir.archive(data_dir, directory / "data.tar")
    shutil.rmtree(directory / "data")
    (directory / "data.index").unlink()
    written = json.loads((directory / "manifest.json").read_text())
    written["data_dir"] = {
        "source": str(resolved(data_dir)),
        "file": "data.tar",
        "size": summary.size,
        "sha256": summary.sha256,
        "file_count": summary.file_count,
        "format": "tar",
    }
    del written["safety"]
    (directory / "manifest.json").write_text(json.dumps(written))
    return manifest.id


async def test_a_backup_holding_a_tar_archive_still_restores_by_swapping(
    tmp_path: Path, data_dir: Path
) -> None:
    before = tree(data_dir)
    backups = make(tmp_path, FakeCompose(data_dir))
    backup_id = await _legacy_backup(backups, data_dir)
    (data_dir / "FORMAT").write_text("format 3\n")
    changed = tree(data_dir)
    aside = backups.data_aside_path("tx42")

    result = await backups.restore(backup_id, data_aside=aside)

    assert result.data_aside == aside
    assert tree(aside) == changed
    assert tree(data_dir) == before
    assert not backups.get(backup_id).is_snapshot


def _killed_between_the_renames(data_dir: Path, backup_id: str, aside: Path) -> None:
    """What a restore killed after its first rename leaves: the staging copy, the data dir
    aside."""
    staging = data_dir.with_name(f".data.restoring-{backup_id}")
    staging.mkdir()
    (staging / "FORMAT").write_text("half extr")
    data_dir.rename(aside)


async def test_a_tar_restore_killed_between_the_two_renames_finishes_when_resumed(
    tmp_path: Path, data_dir: Path
) -> None:
    before = tree(data_dir)
    backups = make(tmp_path, FakeCompose(data_dir))
    backup_id = await _legacy_backup(backups, data_dir)
    (data_dir / "FORMAT").write_text("format 3\n")
    changed = tree(data_dir)
    aside = backups.data_aside_path("tx42")
    _killed_between_the_renames(data_dir, backup_id, aside)
    compose = FakeCompose(data_dir)
    resumed = make(tmp_path, compose)

    result = await resumed.restore(backup_id, data_aside=aside)

    assert result.data_aside == aside
    assert tree(data_dir) == before
    assert tree(aside) == changed
    assert compose.restored == DUMP
    assert sorted(p.name for p in data_dir.parent.iterdir()) == ["data", aside.name]


async def test_an_aside_path_elsewhere_is_refused_before_anything_changes(
    tmp_path: Path, data_dir: Path
) -> None:
    backups, backup_id = await _backed_up_then_changed(tmp_path, data_dir)
    changed = tree(data_dir)

    with pytest.raises(BackupError, match="not beside the data dir"):
        await backups.restore(backup_id, data_aside=tmp_path / "data.replaced-tx42")

    assert tree(data_dir) == changed
    assert sorted(p.name for p in data_dir.parent.iterdir()) == ["data"]


async def test_the_engine_can_drive_it_through_its_protocol(tmp_path: Path, data_dir: Path) -> None:
    engine_view: ports.Backups = make(tmp_path, FakeCompose(data_dir))

    record = await engine_view.create(version="0.1.10", reason="before upgrade to 0.2.0")
    chosen = engine_view.data_aside_path("tx7")
    restored = await engine_view.restore(record.id, data_aside=chosen)

    assert restored.data_aside is None, "nothing differed, nothing was set aside"
    assert chosen.parent == resolved(data_dir).parent and chosen.name.endswith("-tx7")
    (data_dir / "FORMAT").write_text("format 3\n")
    again = await engine_view.restore(record.id)
    aside = again.data_aside
    assert isinstance(aside, Path)
    assert aside.parent == data_dir.parent and aside.name.startswith("data.replaced-2")


async def test_an_empty_dump_names_its_command_without_the_password(
    tmp_path: Path, data_dir: Path
) -> None:
    command = ["custom-dump", "--format=c", "postgresql://specivo:s3cret-pw@127.0.0.1/specivo"]
    failing = make(tmp_path, FakeCompose(data_dir, dump=b""), dump_command=command)

    with pytest.raises(BackupError) as failed:
        await failing.create(version="0.1.10", reason="manual")

    assert "database dump is empty" in str(failed.value)
    assert "custom-dump" in str(failed.value) and "s3cret-pw" not in str(failed.value)
