"""Operator controls: pause/resume unattended upgrades, skip/unskip a version, resolve a
ROLLBACK_FAILED. Each is one journaled row in ``controls`` (the journal's SQLite file); the
current state is what the rows say, read again by the daemon at every scheduler tick.

Rule: the CLI writes here directly and the daemon honours it at once. A pause only stops
unattended upgrades; a skip only keeps a version from being the policy's target (``upgrade --to``
still installs it); a resolve acknowledges one ROLLBACK_FAILED transaction, after which upgrades
no longer need ``--force``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from specivod.engine.sidecar import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS controls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    version TEXT,
    until TEXT,
    transaction_id INTEGER,
    note TEXT NOT NULL DEFAULT ''
);
"""


class Action(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    SKIP = "skip"
    UNSKIP = "unskip"
    RESOLVE = "resolve"


@dataclass(frozen=True)
class ControlState:
    paused: bool = False
    paused_until: datetime | None = None
    """When a pause with ``--until`` ends; ``None`` for an open-ended pause."""
    skipped: dict[str, str] = field(default_factory=dict)
    resolved: frozenset[int] = frozenset()

    def as_json(self) -> dict[str, object]:
        return {
            "paused": self.paused,
            "paused_until": self.paused_until.isoformat() if self.paused_until else None,
            "skipped": dict(self.skipped),
            "resolved_transactions": sorted(self.resolved),
        }


class Controls:
    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir

    def record(
        self,
        action: Action,
        now: datetime,
        *,
        version: str | None = None,
        until: datetime | None = None,
        transaction_id: int | None = None,
        note: str = "",
    ) -> None:
        with connect(self._state_dir, _SCHEMA) as db:
            db.execute(
                "INSERT INTO controls (at, action, version, until, transaction_id, note) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    now.astimezone(UTC).isoformat(),
                    action.value,
                    version,
                    until.astimezone(UTC).isoformat() if until else None,
                    transaction_id,
                    note,
                ),
            )

    def state(self, now: datetime) -> ControlState:
        """What the recorded actions add up to at ``now`` (a pause whose ``until`` passed is
        over)."""
        with connect(self._state_dir, _SCHEMA) as db:
            rows = db.execute("SELECT * FROM controls ORDER BY id").fetchall()
        paused, until = False, None
        skipped: dict[str, str] = {}
        resolved: set[int] = set()
        for row in rows:
            action, at = Action(row["action"]), row["at"]
            if action is Action.PAUSE:
                paused = True
                until = datetime.fromisoformat(row["until"]) if row["until"] else None
            elif action is Action.RESUME:
                paused, until = False, None
            elif action is Action.SKIP and row["version"]:
                skipped[row["version"]] = f"skipped by an operator at {at}"
            elif action is Action.UNSKIP and row["version"]:
                skipped.pop(row["version"], None)
            elif action is Action.RESOLVE and row["transaction_id"] is not None:
                resolved.add(int(row["transaction_id"]))
        if paused and until is not None and until <= now:
            paused, until = False, None
        return ControlState(paused, until, skipped, frozenset(resolved))

    def history(self, limit: int = 50) -> list[dict[str, object]]:
        with connect(self._state_dir, _SCHEMA) as db:
            rows = db.execute("SELECT * FROM controls ORDER BY id DESC LIMIT ?", (limit,))
            return [dict(row) for row in rows.fetchall()]
