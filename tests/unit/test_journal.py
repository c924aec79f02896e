"""The journal: durable, ordered, and strict about transitions."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from specivod.domain.states import ROLLBACK_PATH, TRANSITIONS, IllegalTransition, State
from specivod.engine.journal import JOURNAL_NAME, Journal, Kind

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def test_transactions_survive_reopening_with_their_steps(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    begun = journal.begin(
        Kind.UPGRADE, trigger="manual", from_version="0.1.10", to_version="0.2.0", now=NOW
    )
    moved = journal.advance(begun, State.BACKING_UP, now=NOW + timedelta(seconds=1), detail="d")
    journal.record(moved, backup_id="b1", fingerprint_before="f1")
    journal.close()

    reopened = Journal(tmp_path)
    unfinished = reopened.unfinished()
    assert unfinished is not None
    assert (unfinished.state, unfinished.backup_id, unfinished.fingerprint_before) == (
        State.BACKING_UP,
        "b1",
        "f1",
    )
    assert [(s.state, s.detail) for s in reopened.steps(unfinished.id)] == [
        (State.PLANNED, ""),
        (State.BACKING_UP, "d"),
    ]


def test_journal_uses_wal_and_full_sync(tmp_path: Path) -> None:
    Journal(tmp_path).close()
    with sqlite3.connect(tmp_path / JOURNAL_NAME) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_illegal_transition_is_refused_and_not_recorded(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    begun = journal.begin(Kind.UPGRADE, trigger="t", from_version="a", to_version="b", now=NOW)

    with pytest.raises(IllegalTransition):
        journal.advance(begun, State.SUCCEEDED, now=NOW)

    assert journal.get(begun.id).state is State.PLANNED
    assert len(journal.steps(begun.id)) == 1


def test_terminal_state_sets_finished_and_ends_unfinished(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    begun = journal.begin(Kind.UPGRADE, trigger="t", from_version="a", to_version="b", now=NOW)
    done = journal.advance(begun, State.ABORTED, now=NOW + timedelta(seconds=5))

    assert done.finished_at is not None and done.duration_seconds == 5
    assert journal.unfinished() is None


def test_unknown_fields_are_rejected(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    begun = journal.begin(Kind.UPGRADE, trigger="t", from_version="a", to_version="b", now=NOW)
    with pytest.raises(ValueError, match="not journal fields"):
        journal.record(begun, state="succeeded")


def test_every_state_is_reachable_and_terminal_states_are_final() -> None:
    reachable = {State.PLANNED}
    frontier = [State.PLANNED]
    while frontier:
        for following in TRANSITIONS[frontier.pop()]:
            if following not in reachable:
                reachable.add(following)
                frontier.append(following)
    assert reachable == set(State)
    assert all(not TRANSITIONS[state] for state in State if state.is_terminal)


def test_a_journal_from_before_the_safety_backup_column_is_upgraded(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / JOURNAL_NAME) as old:
        old.execute(
            "CREATE TABLE transactions (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
            " trigger TEXT NOT NULL, restore_mode TEXT NOT NULL DEFAULT 'auto', from_version TEXT,"
            " to_version TEXT, state TEXT NOT NULL, backup_id TEXT, fingerprint_before TEXT,"
            " fingerprint_after TEXT, restored INTEGER NOT NULL DEFAULT 0, data_aside TEXT,"
            " reason TEXT, started_at TEXT NOT NULL, updated_at TEXT NOT NULL, finished_at TEXT)"
        )
        old.execute(
            "INSERT INTO transactions (kind, trigger, from_version, to_version, state, backup_id,"
            " started_at, updated_at) VALUES ('upgrade', 'manual', '0.1.9', '0.1.10', 'succeeded',"
            " 'b1', ?, ?)",
            (NOW.isoformat(), NOW.isoformat()),
        )
    old.close()

    journal = Journal(tmp_path)
    kept = journal.latest()
    assert kept is not None and kept.safety_backup_id is None
    assert journal.backups_still_needed() == ["b1"]
    begun = journal.begin(
        Kind.ROLLBACK, trigger="manual", from_version="0.1.10", to_version="0.1.9", now=NOW
    )
    recorded = journal.record(begun, safety_backup_id="b2")
    assert journal.get(recorded.id).safety_backup_id == "b2"


IMAGE_ROLLBACK = [State.ROLLING_BACK, State.STOPPING, State.RESTARTING, State.ROLLED_BACK]
FORWARD = [State.BACKING_UP, State.PULLING, State.PINNED, State.STARTING, State.VERIFYING]


def _finish(journal: Journal, kind: Kind, versions: tuple[str, str], path: list[State]) -> None:
    transaction = journal.begin(
        kind, trigger="manual", from_version=versions[0], to_version=versions[1], now=NOW
    )
    for state in path:
        transaction = journal.advance(transaction, state, now=NOW)


def test_rolled_back_versions_are_remembered_until_installed_successfully(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    forward = [State.BACKING_UP, State.PULLING, State.PINNED, State.STARTING, State.VERIFYING]
    _finish(
        journal,
        Kind.UPGRADE,
        ("0.1.10", "0.2.1"),
        [*forward, *IMAGE_ROLLBACK],
    )
    _finish(journal, Kind.UPGRADE, ("0.1.10", "0.2.0"), [*forward, State.SUCCEEDED])
    _finish(journal, Kind.ROLLBACK, ("0.2.0", "0.1.10"), IMAGE_ROLLBACK)
    _finish(journal, Kind.UPGRADE, ("0.1.10", "0.1.11"), [State.BACKING_UP, State.ABORTED])

    assert journal.rolled_back_versions() == {
        "0.2.1": "failed and was rolled back in transaction #1",
        "0.2.0": "rolled back by hand in transaction #3",
    }

    _finish(journal, Kind.UPGRADE, ("0.1.10", "0.2.1"), [*forward, State.SUCCEEDED])

    assert set(journal.rolled_back_versions()) == {"0.2.0"}


def _open_with_backup(journal: Journal, kind: Kind, backup_id: str, path: list[State]) -> None:
    transaction = journal.begin(
        kind, trigger="manual", from_version="0.1.10", to_version="0.2.0", now=NOW
    )
    transaction = journal.record(transaction, backup_id=backup_id)
    for state in path:
        transaction = journal.advance(transaction, state, now=NOW)


def test_retention_spares_unfinished_failed_and_latest_transactions(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    _open_with_backup(journal, Kind.UPGRADE, "b-succeeded-old", [*FORWARD, State.SUCCEEDED])
    _open_with_backup(journal, Kind.UPGRADE, "b-succeeded", [*FORWARD, State.SUCCEEDED])
    _open_with_backup(
        journal, Kind.UPGRADE, "b-failed", [*FORWARD, State.ROLLING_BACK, State.ROLLBACK_FAILED]
    )
    _open_with_backup(journal, Kind.UPGRADE, "b-aborted", [State.BACKING_UP, State.ABORTED])
    _open_with_backup(journal, Kind.UPGRADE, "b-killed", [State.BACKING_UP, State.PULLING])

    assert journal.backups_still_needed() == ["b-failed", "b-killed", "b-succeeded"]


def test_retention_spares_the_latest_transactions_safety_backup(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    _open_with_backup(journal, Kind.UPGRADE, "b1", [*FORWARD, State.SUCCEEDED])
    rollback = journal.begin(
        Kind.ROLLBACK, trigger="manual", from_version="0.2.0", to_version="0.1.10", now=NOW
    )
    rollback = journal.record(rollback, backup_id="b1", safety_backup_id="b2")
    for state in IMAGE_ROLLBACK:
        rollback = journal.advance(rollback, state, now=NOW)

    assert journal.backups_still_needed() == ["b1", "b2"]


def test_a_restore_does_not_mark_versions_as_rolled_back(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    _finish(journal, Kind.RESTORE, ("0.2.0", "0.1.10"), list(ROLLBACK_PATH))

    assert journal.rolled_back_versions() == {}


def test_secrets_in_reasons_and_details_never_reach_the_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    leaky = "pg_dump postgresql://specivo:s3cret-pw@db/specivo exited with 1"
    transaction = journal.begin(
        Kind.UPGRADE, trigger="manual", from_version="0.1.10", to_version="0.2.0", now=NOW
    )
    transaction = journal.advance(transaction, State.BACKING_UP, now=NOW, detail=leaky)
    transaction = journal.advance(transaction, State.ABORTED, now=NOW, detail=leaky, reason=leaky)

    stored = [transaction.reason or "", *(step.detail for step in journal.steps(transaction.id))]
    assert not any("s3cret-pw" in text for text in stored)
    assert "postgresql://specivo:" in (transaction.reason or "")


def test_retention_spares_every_failed_rollbacks_backups_not_only_the_latest(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path)
    failed = [*FORWARD, State.ROLLING_BACK, State.ROLLBACK_FAILED]
    _open_with_backup(journal, Kind.UPGRADE, "b-failed-first", failed)
    _open_with_backup(journal, Kind.UPGRADE, "b-failed-second", failed)
    _open_with_backup(journal, Kind.UPGRADE, "b-succeeded", [*FORWARD, State.SUCCEEDED])

    assert journal.backups_still_needed() == ["b-failed-first", "b-failed-second", "b-succeeded"]


def test_set_aside_trees_of_unfinished_and_failed_transactions_are_still_needed(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path)
    for name, path in (
        ("rolled-back", [*FORWARD, *IMAGE_ROLLBACK]),
        ("failed", [*FORWARD, State.ROLLING_BACK, State.ROLLBACK_FAILED]),
        ("killed", [*FORWARD, State.ROLLING_BACK]),
    ):
        transaction = journal.begin(
            Kind.UPGRADE, trigger="manual", from_version="0.1.10", to_version="0.2.0", now=NOW
        )
        transaction = journal.record(transaction, data_aside=f"/srv/data.replaced-{name}")
        for state in path:
            transaction = journal.advance(transaction, state, now=NOW)

    assert journal.set_aside_still_needed() == [
        "/srv/data.replaced-failed",
        "/srv/data.replaced-killed",
    ]


def test_a_rollback_an_alert_triggered_is_not_said_to_be_by_hand(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    _finish(journal, Kind.UPGRADE, ("0.1.10", "0.1.11"), [*FORWARD, State.SUCCEEDED])
    rollback = journal.begin(
        Kind.ROLLBACK, trigger="alertmanager", from_version="0.1.11", to_version="0.1.10", now=NOW
    )
    for state in IMAGE_ROLLBACK:
        rollback = journal.advance(rollback, state, now=NOW)

    assert journal.rolled_back_versions() == {
        "0.1.11": "rolled back (alertmanager) in transaction #2"
    }


def test_the_journal_is_private_even_in_a_state_dir_an_operator_made_open(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    state_dir.chmod(0o755)
    old = os.umask(0o022)
    try:
        Journal(state_dir).close()
    finally:
        os.umask(old)

    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    for path in state_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_opening_a_second_journal_never_touches_the_open_database_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing any descriptor of a SQLite file drops every POSIX lock the process holds on it:
    a second Journal (the daemon opens several) must leave the first one's locks alone."""
    first = Journal(tmp_path)
    first.begin(Kind.UPGRADE, trigger="manual", from_version="0.1.10", to_version="0.2.0", now=NOW)
    opened: list[str] = []
    real_open = os.open

    def recording_open(path: Any, *arguments: Any, **keywords: Any) -> int:
        descriptor = real_open(path, *arguments, **keywords)
        opened.append(str(path))  # only descriptors really opened (and later closed)
        return descriptor

    monkeypatch.setattr(os, "open", recording_open)
    Journal(tmp_path).close()

    assert str(tmp_path / "journal.sqlite3") not in opened
    assert first.latest() is not None
