"""Scheduled backups (``backup.every``): the daemon takes a backup when the newest valid one is
older than ``every``.

Rules: only inside a window when windows are configured; never while a transaction is unfinished
or a failed rollback waits for a person (the data may be between versions), nor while another
operation of this daemon runs; under the host lock (a CLI command holding it: try again at the
next tick) and with the retention protection of a manual backup (``specivod backup``'s helpers).
A failure is logged, reported to ``on_failure`` and retried after ``RETRY_AFTER`` (at most
``every``), never sooner.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from specivod.adapters.backup.backups import BackupManifest, Backups, backups_in
from specivod.adapters.compose import ComposeDeployment
from specivod.commands.backup_rules import refuse_between_versions, still_needed
from specivod.commands.status import needs_a_person
from specivod.daemon.scheduling import window_verdict
from specivod.domain.errors import LockedError, SpecivodError
from specivod.engine.controls import Controls
from specivod.engine.lock import host_lock
from specivod.settings import Settings

if TYPE_CHECKING:
    from specivod.daemon.service import Daemon

log = logging.getLogger(__name__)

REASON = "scheduled"
RETRY_AFTER = timedelta(hours=1)

TakeBackup = Callable[[Settings], Awaitable[BackupManifest]]


async def take_scheduled_backup(settings: Settings) -> BackupManifest:
    """One backup as ``specivod backup`` takes it; raises ``LockedError`` when busy."""
    deployment = ComposeDeployment(
        settings.deployment, database_service=settings.backup.database_service
    )
    try:
        with host_lock(settings.state.dir, "scheduled backup"):
            refuse_between_versions(settings)
            protect, keep_set_aside = still_needed(settings)
            return await Backups(settings.backup, deployment).create(
                version=deployment.pinned_version(),
                reason=REASON,
                protect=protect,
                keep_set_aside=keep_set_aside,
            )
    finally:
        deployment.close()


def newest_valid_backup(settings: Settings) -> datetime | None:
    try:
        manifests = [manifest for manifest in backups_in(settings.backup.dir) if manifest.valid]
    except (OSError, SpecivodError) as error:
        log.warning("cannot read the backups in %s: %s", settings.backup.dir, error)
        return None
    return manifests[0].created_at if manifests else None


@dataclass(frozen=True)
class Conditions:
    """What the daemon knows at a tick."""

    now: datetime
    window_open: bool
    unfinished: bool
    needs_a_person: bool
    busy: bool


def why_not_now(settings: Settings, newest: datetime | None, conditions: Conditions) -> str | None:
    """None when a scheduled backup is due and may run now, else why not (for the log)."""
    every = settings.backup.every
    if every is None:
        return "backup.every is not set"
    if newest is not None and conditions.now - newest < every:
        return f"the newest valid backup ({newest.isoformat()}) is younger than {every}"
    if settings.window and not conditions.window_open:
        return "no window is open"
    if conditions.unfinished:
        return "a transaction is unfinished"
    if conditions.needs_a_person:
        return "a failed rollback waits for a person"
    if conditions.busy:
        return "another operation runs"
    return None


class ScheduledBackups:
    def __init__(
        self,
        take: TakeBackup = take_scheduled_backup,
        newest: Callable[[Settings], datetime | None] = newest_valid_backup,
    ) -> None:
        self._take = take
        self._newest = newest
        self.failed_at: datetime | None = None
        self._waiting_for: str | None = None

    def _retrying_too_soon(self, settings: Settings, now: datetime) -> bool:
        every = settings.backup.every
        if self.failed_at is None or every is None:
            return False
        return now - self.failed_at < min(RETRY_AFTER, every)

    def ready(self, settings: Settings, conditions: Conditions, newest: datetime | None) -> bool:
        """Whether to take a backup now. ``newest`` is what the daemon believes (its totals);
        the backups dir is read only when that says one is due (a CLI backup may be newer)."""
        if settings.backup.every is None or self._retrying_too_soon(settings, conditions.now):
            return False
        if why_not_now(settings, newest, conditions) is not None:
            return False
        reason = why_not_now(settings, self._newest(settings), conditions)
        if reason is not None:
            if reason != self._waiting_for:
                log.info("scheduled backup due but not taken now: %s", reason)
                self._waiting_for = reason
            return False
        self._waiting_for = None
        return True

    async def take(
        self, settings: Settings, now: datetime, on_failure: Callable[[str], None]
    ) -> BackupManifest | None:
        """The backup taken, or None (busy, or failed: logged and passed to ``on_failure``)."""
        log.info("scheduled backup: taking one (backup.every = %s)", settings.backup.every)
        try:
            manifest = await self._take(settings)
        except LockedError as busy:
            log.info("scheduled backup postponed: %s", busy)
            return None
        except SpecivodError as error:
            self.failed_at = now
            log.error("scheduled backup failed, no backup was kept: %s", error)
            on_failure(str(error))
            return None
        self.failed_at = None
        log.warning("scheduled backup %s taken", manifest.id)
        return manifest


async def backup_if_due(daemon: Daemon) -> None:
    """The daemon's scheduler, after each tick: a scheduled backup when one is due, holding
    the daemon's one-operation-at-a-time lock."""
    settings = daemon.settings
    if settings.backup.every is None or daemon.busy.locked():
        return
    now = daemon.clock.now()
    last = daemon.totals.last_backup_timestamp
    conditions = Conditions(
        now=now,
        window_open=window_verdict(settings.windows(), now, timedelta(0)).open,
        unfinished=daemon.journal.unfinished() is not None,
        needs_a_person=needs_a_person(
            daemon.journal.latest_effective(), Controls(settings.state.dir).state(now)
        ),
        busy=False,
    )
    newest = datetime.fromtimestamp(last, UTC) if last is not None else None
    if not daemon.scheduled_backups.ready(settings, conditions, newest):
        return
    async with daemon.busy:
        daemon.idle.clear()
        daemon.step = "scheduled backup"
        daemon.notifier.status("scheduled backup")
        try:
            taken = await daemon.scheduled_backups.take(settings, now, daemon.backup_failed)
        finally:
            daemon.idle.set()
            daemon.step = "idle"
            daemon.notifier.status("idle")
    if taken is not None:
        daemon.refresh()
