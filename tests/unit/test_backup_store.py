"""Backup ids, retention, free space and the backup directory, without Docker."""

from __future__ import annotations

import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specivod.adapters.backup.manifest import (
    BackupManifest,
    DatabaseDump,
    DataDirArchive,
    Durations,
    read_manifest,
    write_manifest,
)
from specivod.adapters.backup.store import (
    BackupStore,
    dump_does_not_fit,
    expected_size,
    format_id,
    is_backup_id,
    ran_out_of_space,
    require_free_space,
    select_expired,
    snapshot_does_not_fit,
)
from specivod.domain.errors import BackupError

MOMENT = datetime(2025, 3, 1, 2, 0, 5, tzinfo=UTC)


def manifest(
    backup_id: str,
    *,
    valid: bool = True,
    size: int = 100,
    safety: bool = False,
    created_at: datetime = MOMENT,
) -> BackupManifest:
    return BackupManifest(
        id=backup_id,
        created_at=created_at,
        version="0.1.10",
        reason="test",
        database=DatabaseDump("database.dump", size, "d" * 64, "custom"),
        data_dir=DataDirArchive("/srv/data", "data.tar", 10, "a" * 64, 3),
        fingerprint="sha256:" + "f" * 64,
        durations=Durations(1.0, 0.5, 1.5),
        valid=valid,
        safety=safety,
    )


def ids(count: int) -> list[str]:
    """``count`` ids, newest first."""
    return [format_id(MOMENT - timedelta(hours=n)) for n in range(count)]


def test_ids_are_utc_sortable_and_unique_within_a_second() -> None:
    berlin = MOMENT.astimezone(datetime.now().astimezone().tzinfo)
    assert format_id(berlin) == "20250301T020005Z"
    assert format_id(MOMENT, 1) == "20250301T020005Z-01"
    assert sorted(
        [format_id(MOMENT, 1), format_id(MOMENT + timedelta(seconds=1)), format_id(MOMENT)]
    ) == [
        format_id(MOMENT),
        format_id(MOMENT, 1),
        format_id(MOMENT + timedelta(seconds=1)),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20250301T020005Z", True),
        ("20250301T020005Z-07", True),
        ("20250301T020005Z.partial", False),
        ("../20250301T020005Z", False),
        ("latest", False),
    ],
)
def test_backup_id_syntax(text: str, expected: bool) -> None:
    assert is_backup_id(text) is expected


def test_an_id_that_is_not_one_is_refused_before_touching_the_disk(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="not a backup id"):
        BackupStore(tmp_path).path("../../etc")


def test_retention_keeps_the_newest_valid_ones() -> None:
    newest_first = [manifest(backup_id) for backup_id in ids(5)]
    assert select_expired(newest_first, keep=2) == ids(5)[2:]


def test_retention_drops_invalid_ones_and_never_a_protected_one() -> None:
    all_ids = ids(5)
    newest_first = [manifest(all_ids[0], valid=False)] + [manifest(i) for i in all_ids[1:]]
    assert select_expired(newest_first, keep=2, protected={all_ids[4]}) == [all_ids[0], all_ids[3]]


@given(
    valid=st.lists(st.booleans(), max_size=12),
    keep=st.integers(min_value=1, max_value=6),
    protected=st.sets(st.integers(min_value=0, max_value=11)),
)
def test_retention_invariants(valid: list[bool], keep: int, protected: set[int]) -> None:
    all_ids = ids(len(valid))
    newest_first = [manifest(i, valid=v) for i, v in zip(all_ids, valid, strict=True)]
    protected_ids = {all_ids[n] for n in protected if n < len(all_ids)}

    expired = set(select_expired(newest_first, keep, protected_ids))

    kept_newest = set([m.id for m in newest_first if m.valid][:keep])
    assert not expired & protected_ids
    assert not expired & kept_newest
    assert set(all_ids) - expired == kept_newest | protected_ids


def test_expected_size_is_the_last_valid_backup() -> None:
    all_ids = ids(3)
    newest_first = [
        manifest(all_ids[0], valid=False, size=1),
        manifest(all_ids[1], size=500),
        manifest(all_ids[2], size=900),
    ]
    assert expected_size(newest_first) == 500 + 10
    assert expected_size([]) is None


def test_free_space_refusal_names_both_numbers(tmp_path: Path) -> None:
    require_free_space(free=1_000, expected=600, min_free=400, directory=tmp_path)
    with pytest.raises(BackupError) as refused:
        require_free_space(free=999, expected=600, min_free=400, directory=tmp_path)
    message = str(refused.value)
    assert "999 bytes (0.00 GiB) free" in message and "1000 bytes (0.00 GiB) needed" in message
    assert "600" in message and "400" in message and str(tmp_path) in message


def test_a_full_file_system_is_told_by_the_writers_words_or_no_room_left() -> None:
    assert ran_out_of_space("write /dev/stdout: no space left on device", free=10)
    assert ran_out_of_space("[Errno 122] Disk quota exceeded", free=10)
    assert ran_out_of_space("pg_dump: error: something else", free=0)
    assert not ran_out_of_space("pg_dump: error: connection refused", free=10)


def test_a_dump_that_does_not_fit_names_the_directory_and_what_is_known(tmp_path: Path) -> None:
    message = str(dump_does_not_fit(tmp_path, 3_000, 0, 19_000_000, 65_536))
    assert f"does not fit in {tmp_path}" in message
    assert "3000 bytes" in message and "19000000 bytes" in message and "65536" in message
    unknown = str(dump_does_not_fit(tmp_path, 3_000, 0, None, 65_536))
    assert "could not be read" in unknown


def test_a_snapshot_that_does_not_fit_names_the_directory_and_the_room_needed(
    tmp_path: Path,
) -> None:
    cause = "cannot snapshot the data dir /srv/data: [Errno 28] No space left on device"
    message = str(snapshot_does_not_fit(tmp_path, 5_000_000, 1_000, 4_096, cause))
    assert f"does not fit in {tmp_path}" in message and cause in message
    assert "5004096 bytes (0.00 GiB) needed" in message and "1000 bytes (0.00 GiB) free" in message


def test_store_lists_complete_backups_newest_first_and_ignores_the_rest(tmp_path: Path) -> None:
    store = BackupStore(tmp_path / "backups")
    store.ensure()
    older, newer = ids(2)[1], ids(2)[0]
    for backup_id in (older, newer):
        work = store.start(backup_id)
        write_manifest(work, manifest(backup_id))
        store.complete(backup_id)
    leftover = store.start(format_id(MOMENT + timedelta(days=1)))
    write_manifest(leftover, manifest(leftover.name.removesuffix(".partial")))
    (store.directory / format_id(MOMENT + timedelta(days=2))).mkdir()
    (store.directory / "notes.txt").write_text("operator's notes\n")

    assert [m.id for m in store.manifests()] == [newer, older]
    assert store.remove_leftovers() == [leftover.name]
    assert not leftover.exists()
    assert (store.directory / "notes.txt").exists()
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700


def test_new_ids_skip_taken_names_including_partial_ones(tmp_path: Path) -> None:
    store = BackupStore(tmp_path)
    store.start(format_id(MOMENT))
    (tmp_path / format_id(MOMENT, 1)).mkdir()
    assert store.new_id(MOMENT) == format_id(MOMENT, 2)


def test_get_unknown_or_unreadable_backup(tmp_path: Path) -> None:
    store = BackupStore(tmp_path)
    with pytest.raises(BackupError, match="no backup"):
        store.get(ids(1)[0])
    (tmp_path / ids(1)[0]).mkdir()
    (tmp_path / ids(1)[0] / "manifest.json").write_text("{not json")
    with pytest.raises(BackupError, match="unreadable manifest"):
        store.get(ids(1)[0])


def test_manifest_round_trips_and_is_private(tmp_path: Path) -> None:
    original = manifest(ids(1)[0])
    write_manifest(tmp_path, original)
    assert read_manifest(tmp_path) == original
    assert stat.S_IMODE((tmp_path / "manifest.json").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "change",
    [{"format": 2}, {"database": None}, {"durations": {"total_seconds": 1}}],
    ids=["unknown-format", "no-database", "incomplete-durations"],
)
def test_manifest_refuses_what_it_did_not_write(change: dict[str, object]) -> None:
    data = {**manifest(ids(1)[0]).to_json(), **change}
    with pytest.raises(ValueError, match=r"manifest"):
        BackupManifest.from_json(data)


def test_safety_backups_are_not_counted_and_go_by_age() -> None:
    week = timedelta(days=7)
    newest_first = [
        manifest("regular-1"),
        manifest("safety-new", safety=True, created_at=MOMENT - timedelta(days=6)),
        manifest("regular-2"),
        manifest("safety-old", safety=True, created_at=MOMENT - timedelta(days=8)),
        manifest("safety-old-kept", safety=True, created_at=MOMENT - timedelta(days=30)),
        manifest("regular-3"),
    ]
    expired = select_expired(newest_first, 2, {"safety-old-kept"}, now=MOMENT, safety_max_age=week)
    assert expired == ["safety-old", "regular-3"]
    assert select_expired(newest_first, 2) == ["regular-3"]


def test_a_backup_written_before_the_safety_flag_is_recognised_by_its_reason(
    tmp_path: Path,
) -> None:
    old = replace(manifest("20250301T020005Z"), reason="state replaced by transaction #4 (upgrade)")
    data = old.to_json()
    del data["safety"]
    assert BackupManifest.from_json(data).safety
    assert not BackupManifest.from_json(manifest("20250301T020005Z").to_json()).safety


def test_a_safety_backup_exactly_as_old_as_the_limit_is_kept() -> None:
    week = timedelta(days=7)
    newest_first = [
        manifest("at-limit", safety=True, created_at=MOMENT - week),
        manifest("past-limit", safety=True, created_at=MOMENT - week - timedelta(seconds=1)),
    ]
    assert select_expired(newest_first, 1, now=MOMENT, safety_max_age=week) == ["past-limit"]
