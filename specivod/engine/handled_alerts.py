"""Alerts that already triggered a rollback, kept with it in the journal's SQLite file (table
``handled_alerts``) and given back to the webhook's memory at start, so that a restarted daemon
does not roll back twice for the same alert (Alertmanager repeats every ``repeat_interval``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from specivod.domain.alerts import AlertKey
from specivod.engine.sidecar import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS handled_alerts (
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    upgrade_id TEXT NOT NULL,
    alert_names TEXT NOT NULL,
    handled_at TEXT NOT NULL,
    PRIMARY KEY (fingerprint, starts_at)
);
"""


@dataclass(frozen=True)
class Handled:
    keys: tuple[AlertKey, ...]
    upgrades: tuple[str, ...]


class HandledAlerts:
    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir

    def record(
        self, keys: tuple[AlertKey, ...], upgrade_id: str, names: tuple[str, ...], now: datetime
    ) -> None:
        stamp = now.astimezone(UTC).isoformat()
        with connect(self._state_dir, _SCHEMA) as db, db:
            db.executemany(
                "INSERT OR REPLACE INTO handled_alerts VALUES (?, ?, ?, ?, ?)",
                [
                    (key.fingerprint, key.starts_at.isoformat(), upgrade_id, ",".join(names), stamp)
                    for key in keys
                ],
            )

    def load(self, limit: int = 1024) -> Handled:
        with connect(self._state_dir, _SCHEMA) as db:
            rows = db.execute(
                "SELECT * FROM handled_alerts ORDER BY handled_at DESC LIMIT ?", (limit,)
            ).fetchall()
        rows.reverse()
        keys = tuple(
            AlertKey(row["fingerprint"], datetime.fromisoformat(row["starts_at"])) for row in rows
        )
        upgrades = tuple(dict.fromkeys(row["upgrade_id"] for row in rows))
        return Handled(keys, upgrades)
