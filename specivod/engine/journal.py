"""The upgrade journal: SQLite in the state dir, WAL mode, ``synchronous=FULL``.

Each transaction (an upgrade, or a manual rollback) is one row with its current state; every step
is appended to ``steps`` in the same SQLite transaction that moves the state, and committed before
the step acts. The rows are also the history: from, to, backup, fingerprints, timings, outcome.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from specivod.domain.errors import JournalError
from specivod.domain.states import RestoreMode, State, check_transition
from specivod.redaction import redact

JOURNAL_NAME = "journal.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    trigger TEXT NOT NULL,
    restore_mode TEXT NOT NULL DEFAULT 'auto',
    from_version TEXT,
    to_version TEXT,
    state TEXT NOT NULL,
    backup_id TEXT,
    fingerprint_before TEXT,
    fingerprint_after TEXT,
    restored INTEGER NOT NULL DEFAULT 0,
    data_aside TEXT,
    safety_backup_id TEXT,
    earlier_safety_backups TEXT,
    serving TEXT,
    reason TEXT,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id INTEGER NOT NULL REFERENCES transactions (id),
    state TEXT NOT NULL,
    at TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS steps_by_transaction ON steps (transaction_id, id);
"""
_COLUMNS_ADDED_LATER = {
    "safety_backup_id": "TEXT",
    "earlier_safety_backups": "TEXT",
    "serving": "TEXT",
}
"""Columns a journal written by an older specivod lacks; added when it is opened."""


class Kind(StrEnum):
    UPGRADE = "upgrade"
    ROLLBACK = "rollback"
    """A person's (or Alertmanager's) rollback of the last successful upgrade."""
    RESTORE = "restore"
    """``specivod restore ID``: the backup's database and data dir under the backup's version."""


@dataclass(frozen=True)
class Transaction:
    id: int
    kind: Kind
    trigger: str
    restore_mode: RestoreMode
    from_version: str | None
    to_version: str | None
    state: State
    backup_id: str | None
    fingerprint_before: str | None
    fingerprint_after: str | None
    restored: bool
    data_aside: str | None
    safety_backup_id: str | None
    """The backup of the state a restore replaced, taken before the restore."""
    earlier_safety_backups: str | None
    """Safety backups this transaction took before ``safety_backup_id`` (comma-separated): a
    restore that found the app running again took another; each may hold rows no other has."""
    serving: str | None
    """The app services running when a rollback or restore began, comma-separated (empty when
    none ran); the only ones it starts again when it gives up before replacing anything."""
    reason: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def earlier_safety_backup_ids(self) -> list[str]:
        return _names(self.earlier_safety_backups)

    @property
    def serving_services(self) -> list[str] | None:
        """``None`` when not recorded (a journal written by an older specivod)."""
        return None if self.serving is None else _names(self.serving)

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Step:
    state: State
    at: datetime
    detail: str


_UPDATABLE = {
    "backup_id",
    "fingerprint_before",
    "fingerprint_after",
    "restored",
    "data_aside",
    "safety_backup_id",
    "earlier_safety_backups",
    "serving",
    "reason",
}


def _names(listed: str | None) -> list[str]:
    """The names of a comma-separated journal column."""
    return [name for name in (listed or "").split(",") if name]


def _check_fields(updates: dict[str, str | bool | None]) -> None:
    unknown = set(updates) - _UPDATABLE
    if unknown:
        raise ValueError(f"not journal fields: {sorted(unknown)}")
    if isinstance(updates.get("reason"), str):
        updates["reason"] = redact(str(updates["reason"]))


def _row_to_transaction(row: sqlite3.Row) -> Transaction:
    values = dict(row)
    return Transaction(
        id=values["id"],
        kind=Kind(values["kind"]),
        trigger=values["trigger"],
        restore_mode=RestoreMode(values["restore_mode"]),
        from_version=values["from_version"],
        to_version=values["to_version"],
        state=State(values["state"]),
        backup_id=values["backup_id"],
        fingerprint_before=values["fingerprint_before"],
        fingerprint_after=values["fingerprint_after"],
        restored=bool(values["restored"]),
        data_aside=values["data_aside"],
        safety_backup_id=values["safety_backup_id"],
        earlier_safety_backups=values["earlier_safety_backups"],
        serving=values["serving"],
        reason=values["reason"],
        started_at=datetime.fromisoformat(values["started_at"]),
        updated_at=datetime.fromisoformat(values["updated_at"]),
        finished_at=(
            datetime.fromisoformat(values["finished_at"]) if values["finished_at"] else None
        ),
    )


def _private_state(state_dir: Path) -> None:
    """The state dir 0700 (also one an operator made with a wider mode) and the journal's files
    0600 from their first byte: the history names versions, backups and paths, and the umask
    of a shell running the CLI would leave them readable to every local user."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(state_dir.stat().st_mode) & 0o077:
        state_dir.chmod(0o700)
    database = state_dir / JOURNAL_NAME
    # Only a new file is opened here: closing any descriptor of a database drops every POSIX
    # lock this process holds on it, the locks of another open Journal's connection included.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    for path in (database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                path.chmod(0o600)


class Journal:
    """Durable record of every transaction and step. One connection per instance."""

    def __init__(self, state_dir: Path) -> None:
        try:
            _private_state(state_dir)
            self._db = sqlite3.connect(state_dir / JOURNAL_NAME, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_SCHEMA)
            self._add_missing_columns()
        except (OSError, sqlite3.Error) as error:
            raise JournalError(f"cannot open the journal in {state_dir}: {error}") from None

    def _add_missing_columns(self) -> None:
        present = {row["name"] for row in self._db.execute("PRAGMA table_info(transactions)")}
        for name, kind in _COLUMNS_ADDED_LATER.items():
            if name in present:
                continue
            try:
                self._db.execute(f"ALTER TABLE transactions ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError as error:
                if "duplicate column" not in str(error):  # another process was quicker
                    raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_exception: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            raise JournalError(f"cannot write the journal: {error}") from None

    def begin(
        self,
        kind: Kind,
        *,
        trigger: str,
        from_version: str | None,
        to_version: str | None,
        now: datetime,
        restore_mode: RestoreMode = RestoreMode.AUTO,
        detail: str = "",
        **facts: str | bool | None,
    ) -> Transaction:
        """Open a transaction in PLANNED; ``facts`` are journal fields known from the start."""
        _check_fields(facts)
        stamp = now.astimezone(UTC).isoformat()
        columns = {
            "kind": kind.value,
            "trigger": trigger,
            "restore_mode": restore_mode.value,
            "from_version": from_version,
            "to_version": to_version,
            "state": State.PLANNED.value,
            "started_at": stamp,
            "updated_at": stamp,
            **facts,
        }
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        with self._write() as db:
            cursor = db.execute(
                f"INSERT INTO transactions ({names}) VALUES ({marks})",  # noqa: S608
                tuple(columns.values()),
            )
            transaction_id = int(cursor.lastrowid or 0)
            db.execute(
                "INSERT INTO steps (transaction_id, state, at, detail) VALUES (?, ?, ?, ?)",
                (transaction_id, State.PLANNED.value, stamp, redact(detail)),
            )
        return self.get(transaction_id)

    def advance(
        self,
        transaction: Transaction,
        state: State,
        *,
        now: datetime,
        detail: str = "",
        **updates: str | bool | None,
    ) -> Transaction:
        """Move to ``state`` (a legal transition, or the same state when a step is resumed),
        record the step, and commit before returning."""
        if state is not transaction.state:
            check_transition(transaction.state, state)
        _check_fields(updates)
        stamp = now.astimezone(UTC).isoformat()
        assignments = {"state": state.value, "updated_at": stamp, **updates}
        if state.is_terminal:
            assignments["finished_at"] = stamp
        columns = ", ".join(f"{column} = ?" for column in assignments)
        with self._write() as db:
            db.execute(
                f"UPDATE transactions SET {columns} WHERE id = ?",  # noqa: S608 - fixed columns
                (*assignments.values(), transaction.id),
            )
            db.execute(
                "INSERT INTO steps (transaction_id, state, at, detail) VALUES (?, ?, ?, ?)",
                (transaction.id, state.value, stamp, redact(detail)),
            )
        return self.get(transaction.id)

    def record(self, transaction: Transaction, **updates: str | bool | None) -> Transaction:
        """Store facts learned during a step (backup id, fingerprints) without moving state."""
        _check_fields(updates)
        columns = ", ".join(f"{column} = ?" for column in updates)
        with self._write() as db:
            db.execute(
                f"UPDATE transactions SET {columns} WHERE id = ?",  # noqa: S608 - fixed columns
                (*updates.values(), transaction.id),
            )
        return self.get(transaction.id)

    def get(self, transaction_id: int) -> Transaction:
        row = self._query_one("SELECT * FROM transactions WHERE id = ?", (transaction_id,))
        if row is None:
            raise JournalError(f"no transaction {transaction_id} in the journal")
        return _row_to_transaction(row)

    def unfinished(self) -> Transaction | None:
        terminal = tuple(state.value for state in State if state.is_terminal)
        marks = ", ".join("?" for _ in terminal)
        row = self._query_one(
            f"SELECT * FROM transactions WHERE state NOT IN ({marks}) "  # noqa: S608
            "ORDER BY id DESC LIMIT 1",
            terminal,
        )
        return _row_to_transaction(row) if row else None

    def latest(self) -> Transaction | None:
        row = self._query_one("SELECT * FROM transactions ORDER BY id DESC LIMIT 1", ())
        return _row_to_transaction(row) if row else None

    def latest_effective(self) -> Transaction | None:
        """The latest transaction that was not ABORTED: an aborted one changed nothing, so it
        neither causes nor clears a ROLLBACK_FAILED's need for a person."""
        row = self._query_one(
            "SELECT * FROM transactions WHERE state != ? ORDER BY id DESC LIMIT 1",
            (State.ABORTED.value,),
        )
        return _row_to_transaction(row) if row else None

    def last_succeeded_upgrade(self) -> Transaction | None:
        row = self._query_one(
            "SELECT * FROM transactions WHERE kind = ? AND state = ? ORDER BY id DESC LIMIT 1",
            (Kind.UPGRADE.value, State.SUCCEEDED.value),
        )
        return _row_to_transaction(row) if row else None

    def backups_still_needed(self) -> list[str]:
        """Backups retention must keep: those named by an unfinished transaction, by any
        ROLLBACK_FAILED and by the latest transaction of all (a person may still need them), and
        the one taken before the last successful upgrade (a manual rollback restores it)."""
        terminal = tuple(state.value for state in State if state.is_terminal)
        marks = ", ".join("?" for _ in terminal)
        rows = self._query(
            "SELECT backup_id, safety_backup_id, earlier_safety_backups "  # noqa: S608
            "FROM transactions WHERE "
            f"state NOT IN ({marks}) "
            "OR state = ? "
            "OR id = (SELECT MAX(id) FROM transactions WHERE kind = ? AND state = ?) "
            "OR id = (SELECT MAX(id) FROM transactions)",
            (*terminal, State.ROLLBACK_FAILED.value, Kind.UPGRADE.value, State.SUCCEEDED.value),
        )
        needed = {row[column] for row in rows for column in ("backup_id", "safety_backup_id")}
        for row in rows:
            needed.update(_names(row["earlier_safety_backups"]))
        return sorted(backup_id for backup_id in needed if backup_id)

    def set_aside_still_needed(self) -> list[str]:
        """The set-aside trees (paths) retention must keep: those named by an unfinished
        transaction or by any ROLLBACK_FAILED (a person sorting it out needs them)."""
        terminal = tuple(state.value for state in State if state.is_terminal)
        marks = ", ".join("?" for _ in terminal)
        rows = self._query(
            "SELECT data_aside FROM transactions WHERE data_aside IS NOT NULL "  # noqa: S608
            f"AND (state NOT IN ({marks}) OR state = ?)",
            (*terminal, State.ROLLBACK_FAILED.value),
        )
        return sorted({row["data_aside"] for row in rows})

    def rolled_back_versions(self) -> dict[str, str]:
        """Versions an unattended upgrade must not pick again, each with why: an upgrade to it
        was rolled back (or its rollback failed), or a person rolled it back. A later successful
        upgrade to the same version (``--to``) clears it."""
        rows = self._query(
            "SELECT id, kind, trigger, from_version, to_version, state FROM transactions "
            "WHERE state IN (?, ?, ?) AND kind IN (?, ?) ORDER BY id",
            (
                State.SUCCEEDED.value,
                State.ROLLED_BACK.value,
                State.ROLLBACK_FAILED.value,
                Kind.UPGRADE.value,
                Kind.ROLLBACK.value,
            ),
        )
        avoided: dict[str, str] = {}
        for row in rows:
            state, number = State(row["state"]), row["id"]
            if row["kind"] == Kind.ROLLBACK.value:
                if state is State.ROLLED_BACK and row["from_version"]:
                    by = "by hand" if row["trigger"] == "manual" else f"({row['trigger']})"
                    avoided[row["from_version"]] = f"rolled back {by} in transaction #{number}"
            elif state is State.SUCCEEDED:
                avoided.pop(row["to_version"], None)
            elif row["to_version"]:
                avoided[row["to_version"]] = f"failed and was rolled back in transaction #{number}"
        return avoided

    def history(self, limit: int = 50) -> list[Transaction]:
        rows = self._query("SELECT * FROM transactions ORDER BY id DESC LIMIT ?", (limit,))
        return [_row_to_transaction(row) for row in rows]

    def steps(self, transaction_id: int) -> list[Step]:
        rows = self._query(
            "SELECT state, at, detail FROM steps WHERE transaction_id = ? ORDER BY id",
            (transaction_id,),
        )
        return [Step(State(r["state"]), datetime.fromisoformat(r["at"]), r["detail"]) for r in rows]

    def _query(self, sql: str, parameters: tuple[object, ...]) -> list[sqlite3.Row]:
        try:
            with closing(self._db.execute(sql, parameters)) as cursor:
                return list(cursor.fetchall())
        except sqlite3.Error as error:
            raise JournalError(f"cannot read the journal: {error}") from None

    def _query_one(self, sql: str, parameters: tuple[object, ...]) -> sqlite3.Row | None:
        rows = self._query(sql, parameters)
        return rows[0] if rows else None
