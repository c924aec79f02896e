"""Scheduled backups (backup.every): due when the newest valid backup is older than ``every``;
only in a window when windows are configured, never with a transaction unfinished or a person
needed; a CLI backup newer than the daemon knows counts; a failure is retried an hour later,
not at every tick; the daemon exports backup.every as specivod_backup_interval_seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from specivod.adapters.backup.manifest import BackupManifest
from specivod.daemon.scheduled_backup import (
    RETRY_AFTER,
    Conditions,
    ScheduledBackups,
    take_scheduled_backup,
    why_not_now,
)
from specivod.daemon.service import Daemon
from specivod.domain.errors import BackupError, LockedError, SpecivodError
from specivod.domain.states import State
from specivod.engine.journal import Journal, Kind
from specivod.settings import Settings
from tests.unit.fakes import FakeClock
from tests.unit.test_backup_store import manifest

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)  # a Saturday, inside the window below
WINDOW = {"days": ["sat"], "start": "02:00", "end": "06:00", "timezone": "UTC"}


def settings(tmp_path: Path, every: str | None = "24h", windows: bool = True) -> Settings:
    project = tmp_path / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / ".env").write_text("SPECIVO_VERSION=0.1.10\n")
    backup: dict[str, Any] = {"dir": tmp_path / "backups"}
    if every is not None:
        backup["every"] = every
    return Settings(
        registry={"image": "127.0.0.1:5000/specivo/specivo"},
        deployment={"project_dir": project},
        state={"dir": tmp_path / "state"},
        backup=backup,
        window=[WINDOW] if windows else [],
    )


def conditions(**changes: Any) -> Conditions:
    fields: dict[str, Any] = {
        "now": NOW,
        "window_open": True,
        "unfinished": False,
        "needs_a_person": False,
        "busy": False,
    }
    return Conditions(**{**fields, **changes})


class FakeTake:
    def __init__(self, *outcomes: BackupManifest | SpecivodError) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self, _settings: Settings) -> BackupManifest:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, SpecivodError):
            raise outcome
        return outcome


def test_due_only_when_the_newest_backup_is_older_than_every(tmp_path: Path) -> None:
    made = settings(tmp_path)
    assert why_not_now(made, None, conditions()) is None
    assert why_not_now(made, NOW - timedelta(hours=25), conditions()) is None
    assert "younger" in (why_not_now(made, NOW - timedelta(hours=23), conditions()) or "")
    assert why_not_now(settings(tmp_path, every=None), None, conditions()) is not None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"window_open": False}, "no window is open"),
        ({"unfinished": True}, "a transaction is unfinished"),
        ({"needs_a_person": True}, "a failed rollback waits for a person"),
        ({"busy": True}, "another operation runs"),
    ],
)
def test_a_due_backup_waits(tmp_path: Path, change: dict[str, Any], reason: str) -> None:
    assert why_not_now(settings(tmp_path), None, conditions(**change)) == reason


def test_without_windows_a_due_backup_runs_at_any_time(tmp_path: Path) -> None:
    made = settings(tmp_path, windows=False)
    assert why_not_now(made, None, conditions(window_open=False)) is None


def test_a_cli_backup_newer_than_the_daemon_knows_makes_it_not_due(tmp_path: Path) -> None:
    read: list[Settings] = []

    def newest(found: Settings) -> datetime:
        read.append(found)
        return NOW - timedelta(minutes=5)

    schedule = ScheduledBackups(take=FakeTake(), newest=newest)
    made = settings(tmp_path)

    assert not schedule.ready(made, conditions(), NOW - timedelta(hours=23))
    assert read == []  # the daemon's own belief says not due: the disk is not read
    assert not schedule.ready(made, conditions(), NOW - timedelta(days=3))
    assert read == [made]


async def test_a_failure_is_reported_once_and_retried_an_hour_later(tmp_path: Path) -> None:
    take = FakeTake(BackupError("pg_dump exited 1"), manifest("20261128T040000Z"))
    schedule = ScheduledBackups(take=take, newest=lambda _: None)
    made = settings(tmp_path)
    failures: list[str] = []

    assert schedule.ready(made, conditions(), None)
    assert await schedule.take(made, NOW, failures.append) is None
    assert failures == ["pg_dump exited 1"]
    assert not schedule.ready(made, conditions(now=NOW + timedelta(minutes=59)), None)
    later = NOW + RETRY_AFTER
    assert schedule.ready(made, conditions(now=later), None)
    taken = await schedule.take(made, later, failures.append)
    assert taken is not None and taken.id == "20261128T040000Z"
    assert failures == ["pg_dump exited 1"]
    assert take.calls == 2


async def test_a_held_host_lock_postpones_without_a_failure(tmp_path: Path) -> None:
    schedule = ScheduledBackups(take=FakeTake(LockedError("busy")), newest=lambda _: None)
    failures: list[str] = []

    assert await schedule.take(settings(tmp_path), NOW, failures.append) is None
    assert failures == []
    assert schedule.ready(settings(tmp_path), conditions(), None)


async def test_a_transaction_left_unfinished_refuses_the_real_backup(tmp_path: Path) -> None:
    made = settings(tmp_path)
    with Journal(made.state.dir) as journal:
        journal.begin(
            Kind.UPGRADE, trigger="cli", from_version="0.1.10", to_version="0.1.11", now=NOW
        )

    with pytest.raises(SpecivodError, match="left unfinished"):
        await take_scheduled_backup(made)
    assert not (tmp_path / "backups").exists() or not any((tmp_path / "backups").iterdir())


def daemon(tmp_path: Path, take: FakeTake, **kwargs: Any) -> tuple[Daemon, FakeClock]:
    clock = FakeClock(NOW)
    made = Daemon(
        settings(tmp_path, **kwargs),
        tmp_path / "c.toml",
        clock=clock,
        scheduled_backups=ScheduledBackups(take=take, newest=lambda _: None),
    )
    return made, clock


async def test_the_daemon_takes_a_due_backup_inside_its_window_only(tmp_path: Path) -> None:
    take = FakeTake(manifest("20261128T040000Z"))
    made, clock = daemon(tmp_path, take)
    clock.current = NOW + timedelta(hours=4)  # 07:00, the window closed

    await made.backup_if_due()
    assert take.calls == 0

    clock.current = NOW + timedelta(days=7)  # the next Saturday, 03:00
    await made.backup_if_due()
    assert take.calls == 1
    assert made.idle.is_set() and not made.busy.locked()


async def test_the_daemon_leaves_a_busy_moment_alone(tmp_path: Path) -> None:
    take = FakeTake(manifest("20261128T040000Z"))
    made, _ = daemon(tmp_path, take)
    with made.journal as journal:
        started = journal.begin(
            Kind.UPGRADE, trigger="cli", from_version="0.1.10", to_version="0.1.11", now=NOW
        )
        await made.backup_if_due()
        assert take.calls == 0
        journal.advance(started, State.ABORTED, now=NOW)

    made.journal = Journal(made.settings.state.dir)
    async with made.busy:
        await made.backup_if_due()
    assert take.calls == 0
    await made.backup_if_due()
    assert take.calls == 1


def test_backup_every_is_exported_in_seconds_and_absent_when_unset(tmp_path: Path) -> None:
    scheduled, _ = daemon(tmp_path / "a", FakeTake(), every="36h")
    unscheduled, _ = daemon(tmp_path / "b", FakeTake(), every=None)

    assert b"specivod_backup_interval_seconds 129600.0" in scheduled.renderer.render()
    assert b"specivod_backup_interval_seconds" not in unscheduled.renderer.render()
