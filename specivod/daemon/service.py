"""``specivod run``: startup → supervised tasks → shutdown, as a straight line.

Startup recovers the journal (asking systemd for more start time while it runs), starts the web
server, then says READY=1. The root tasks (poller, scheduler, watchdog, web) run under
``supervise``; SIGTERM/SIGINT resolve the stop future (STOPPING=1 first, the engine's StopFlag
set so a transaction stops at its next step boundary and a rollback finishes); SIGHUP reloads
the configuration, keeping the old one when the new file is bad. A ROLLBACK_FAILED is not a
crash: the daemon stays up, says a person is needed, and only refuses upgrades.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

from specivod.adapters import compose
from specivod.adapters.clock import Clock, SystemClock
from specivod.adapters.registry import registry_from_settings
from specivod.adapters.registry.release import ReleaseCatalog, ReleaseSource
from specivod.commands.status import needs_a_person, upgrade_target
from specivod.config_loader import load_settings
from specivod.daemon.alert_rollbacks import Vetoes, alert_reason, in_flight_upgrade
from specivod.daemon.engine_watch import EngineWatch, Probe
from specivod.daemon.extra_metrics import (
    DaemonCollector,
    DaemonView,
    OperationsCollector,
    OperationsView,
)
from specivod.daemon.guarded import GuardedEngine
from specivod.daemon.notify import Notifier
from specivod.daemon.planner import (
    DaemonPlan,
    Review,
    held_releases,
    plan_unattended,
    review_releases,
    unattended_avoid,
)
from specivod.daemon.poller import Poller
from specivod.daemon.reports import daemon_view, metrics_snapshot, status_report
from specivod.daemon.scheduled_backup import ScheduledBackups, backup_if_due
from specivod.daemon.scheduling import Gate, expected_duration, window_verdict
from specivod.daemon.tasks import stop_on_signals as resolve_on_signals
from specivod.daemon.tasks import supervise
from specivod.daemon.totals import Totals, last_upgrade, read_totals
from specivod.domain.errors import ConfigError, LockedError, SpecivodError
from specivod.domain.releases import ReleaseUnavailable, notes_link, release_json
from specivod.engine.context import StopFlag
from specivod.engine.controls import Controls, ControlState
from specivod.engine.handled_alerts import HandledAlerts
from specivod.engine.journal import Journal, Kind, Transaction
from specivod.engine.service import NothingToDo
from specivod.metrics import CachedRenderer, MetricsSnapshot, make_registry
from specivod.notify_outcomes import (
    Notifications,
    OutcomeWatch,
    backup_failed_message,
    outcome_message,
)
from specivod.settings import RegistrySettings, Settings
from specivod.web.app import WebhookSettings, make_app, serve
from specivod.web.webhook import LastUpgrade, RollbackRequest, SeenAlerts, new_webhook_counts

log = logging.getLogger(__name__)

OpenRegistry = Callable[[RegistrySettings], AbstractAsyncContextManager[ReleaseSource]]
SHUTDOWN_GRACE = 1200.0
"""Seconds the tasks get to finish after SIGTERM (a rollback in progress); below TimeoutStopSec."""
EXTEND_EVERY = 10.0
MAX_TICK = 60.0


class Daemon:
    def __init__(
        self,
        settings: Settings,
        config_path: Path,
        *,
        notifier: Notifier | None = None,
        clock: Clock | None = None,
        load: Callable[[Path], Settings] = load_settings,
        open_registry: OpenRegistry = registry_from_settings,
        notifications: Notifications | None = None,
        scheduled_backups: ScheduledBackups | None = None,
        engine_probe: Probe = compose.engine_problem,
    ) -> None:
        self.settings = settings
        self._open_registry = open_registry
        self._config_path = config_path
        self._load = load
        self.notifier = notifier or Notifier()
        self.clock: Clock = clock or SystemClock()
        self.stop_flag = StopFlag()
        self.poller = Poller(settings, self.clock.now, lambda: self.deployed)
        self.engine = EngineWatch(
            engine_probe, self.clock.now, settings.registry.poll_interval.total_seconds()
        )
        self.vetoes = Vetoes()
        self.journal = Journal(settings.state.dir)
        self.outcomes = OutcomeWatch(self.journal)
        self.notifications = notifications or Notifications(lambda: self.settings.notifications)
        self.scheduled_backups = scheduled_backups or ScheduledBackups()
        self.totals = Totals()
        self.controls = ControlState()
        self.deployed: str | None = None
        self.plan: DaemonPlan | None = None
        self.catalog = ReleaseCatalog()
        self.review: Review | None = None
        self._reviewed_poll: datetime | None = None
        self.gate: Gate | None = None
        self.running: Transaction | None = None
        self.step = "starting"
        self.last_outcome: str | None = None
        self.webhook_counts = new_webhook_counts()
        registry = make_registry(self.snapshot)
        registry.register(DaemonCollector(self.view))
        registry.register(OperationsCollector(self.operations_view))
        self.renderer = CachedRenderer(registry)
        self._attempted: dict[str, datetime] = {}
        self._reported: set[str] = set()
        self._alert_request: RollbackRequest | None = None
        self.busy = asyncio.Lock()
        self.idle = asyncio.Event()
        self.idle.set()
        self._stop: asyncio.Future[Any] | None = None

    # Startup → tasks → shutdown.

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[Any] = loop.create_future()
        self._stop = stop
        undo_signals = resolve_on_signals(stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        stop.add_done_callback(self._stopping)
        runner = None
        try:
            self._say_how_unattended_works()
            await self._recover()
            self.refresh()
            if stop.done():
                return 0
            handled = HandledAlerts(self.settings.state.dir).load()
            app = make_app(
                webhook=WebhookSettings.from_settings(self.settings),
                render_metrics=self.renderer.render,
                status=self.status,
                last_upgrade=self.last_upgrade,
                start_rollback=self.alert_rollback,
                now=self.clock.now,
                counts=self.webhook_counts,
                seen=SeenAlerts(handled.keys, handled.upgrades),
            )
            runner = await serve(app, self.settings.http.listen)
            log.info("listening on %s", self.settings.http.listen)
            self.notifier.ready()
            self._set_step("idle")
            return await supervise(
                {
                    "poller": lambda: self.poller.run(stop),
                    "engine": lambda: self.engine.run(stop),
                    "scheduler": lambda: self._schedule(stop),
                    "watchdog": lambda: self._watchdog(stop),
                    "web": lambda: self._serve_until_idle(stop),
                },
                stop,
                grace=SHUTDOWN_GRACE,
            )
        finally:
            undo_signals()
            loop.remove_signal_handler(signal.SIGHUP)
            if runner is not None:
                await runner.cleanup()
            await self.notifications.drain()
            self.journal.close()

    def _stopping(self, stop: asyncio.Future[Any]) -> None:
        reason = "stop requested" if stop.cancelled() else f"{stop.result()} received"
        self.notifier.stopping()
        self.stop_flag.request(reason)
        self._set_step(f"stopping ({reason})")

    def _say_how_unattended_works(self) -> None:
        if not self.settings.window:
            log.warning(
                "no maintenance window is configured: specivod never upgrades unattended "
                "(status and metrics say so; upgrade by hand with specivod upgrade --now)"
            )

    async def _recover(self) -> None:
        unfinished = self.journal.unfinished()
        if unfinished is None:
            return
        self._set_step(f"recovering transaction {unfinished.id} ({unfinished.state.name})")
        self.notifier.extend_timeout(3 * EXTEND_EVERY)
        extender = asyncio.create_task(self._extend_start_timeout())
        try:
            async with self._engine() as engine:
                await engine.recover()
        except LockedError as error:
            log.warning("not recovering now, busy: %s", error)
        finally:
            extender.cancel()
            self.running = None

    async def _extend_start_timeout(self) -> None:
        """Systemd's start timeout keeps moving while recovery runs (a VERIFYING transaction
        gets a fresh health budget), and stops moving if the loop hangs."""
        while True:
            await asyncio.sleep(EXTEND_EVERY)
            self.notifier.extend_timeout(3 * EXTEND_EVERY)

    def _engine(self) -> Any:
        return GuardedEngine(self)

    async def _watchdog(self, stop: asyncio.Future[Any]) -> None:
        interval = self.notifier.watchdog_interval()
        while not stop.done():
            if interval is not None:
                self.notifier.watchdog()
            await asyncio.wait([stop], timeout=interval)

    async def _serve_until_idle(self, stop: asyncio.Future[Any]) -> None:
        """The web server keeps answering until a transaction stopping with us has finished."""
        await asyncio.wait([stop])
        await self.idle.wait()

    async def _schedule(self, stop: asyncio.Future[Any]) -> None:
        tick = min(self.settings.registry.poll_interval.total_seconds(), MAX_TICK)
        while not stop.done():
            try:
                await self.tick()
            except SpecivodError as error:
                log.error("scheduler: %s", error)
            if not stop.done():
                await self.backup_if_due()
            polled = asyncio.ensure_future(self.poller.polled.wait())
            await asyncio.wait([stop, polled], timeout=tick, return_when=asyncio.FIRST_COMPLETED)
            polled.cancel()
            self.poller.polled.clear()

    # One scheduler tick: read what changed, decide, maybe upgrade.

    def refresh(self) -> None:
        """Re-read the journal totals and the backups (on start and after each transaction)."""
        self.totals = read_totals(self.journal, self.settings.backup.dir)
        for transaction in self.outcomes.ended(self.journal):
            self.notifications.post(outcome_message(transaction))

    def _read_deployed(self) -> str | None:
        try:
            return compose.deployed_version(self.settings.deployment)
        except SpecivodError as error:
            log.warning("cannot read the pinned version: %s", error)
            return None

    def decide(self, now: datetime) -> Gate:
        settings = self.settings
        self.controls = Controls(settings.state.dir).state(now)
        self.deployed = self._read_deployed()
        latest = self.journal.latest()
        if latest != self.totals.latest:
            self.refresh()  # a CLI command ran a transaction
        self.plan = plan_unattended(
            settings,
            self.poller.state.tags,
            deployed=self.deployed,
            controls=self.controls,
            journal=self.journal,
            now=now,
            review=self.review,
        )
        expected = expected_duration(
            self.totals.upgrade_durations, settings.policy.expected_duration
        )
        paused = None
        if self.controls.paused:
            until = self.controls.paused_until
            paused = "paused by an operator" + (f" until {until.isoformat()}" if until else "")
        person = None
        failed = self.journal.latest_effective()
        if needs_a_person(failed, self.controls) and failed is not None:
            person = (
                f"transaction {failed.id} ended in ROLLBACK_FAILED: a person is needed "
                "(repair, then specivod resolve)"
            )
        self.gate = Gate(
            window=window_verdict(settings.windows(), now, expected),
            paused=paused,
            needs_a_person=person,
            pin_problem=self.plan.pin_problem if self.plan else None,
            engine=self.engine.health.blocks,
        )
        return self.gate

    async def review_releases(self, now: datetime) -> None:
        """Read what the releases the plan could pick say about themselves; the catalog asks
        for a tag's digest again only after a new poll."""
        tags = self.poller.state.tags
        if tags is None:
            return
        if self.poller.state.last_success != self._reviewed_poll:
            self._reviewed_poll = self.poller.state.last_success
            self.catalog.expire()
        settings = self.settings
        deployed = self._read_deployed()
        avoid = unattended_avoid(Controls(settings.state.dir).state(now), self.journal)
        held = held_releases(settings, tags, deployed, now)
        async with self._open_registry(settings.registry) as client:
            self.review = await review_releases(
                functools.partial(self.catalog.lookup, client),
                settings,
                tags,
                deployed=deployed,
                avoid=avoid,
                held=held,
            )

    async def tick(self) -> None:
        now = self.clock.now()
        await self.review_releases(now)
        gate = self.decide(now)
        self._report_once(gate.needs_a_person or gate.pin_problem)
        plan = self.plan
        if plan is None or plan.target is None or self._stop is None or self._stop.done():
            return
        if not gate.may_start:
            return
        if self.busy.locked():
            # Another operation (an alert's rollback) runs: its end changes the plan, so this
            # one is not queued behind it.
            return
        last_try = self._attempted.get(plan.target)
        if last_try is not None and now - last_try < self.settings.registry.poll_interval:
            return
        self._attempted[plan.target] = now
        await self.upgrade(plan.target)

    async def backup_if_due(self) -> None:
        await backup_if_due(self)

    def backup_failed(self, problem: str) -> None:
        self.last_outcome = f"scheduled backup failed: {problem}"
        self.notifications.post(backup_failed_message(problem))

    def _report_once(self, problem: str | None) -> None:
        if problem is not None and problem not in self._reported:
            self._reported.add(problem)
            log.error("unattended upgrades stopped: %s", problem)

    async def upgrade(self, target: str) -> None:
        plan = self.plan
        about = plan.release_line if plan and plan.target == target else None
        log.info("unattended upgrade to %s; %s", target, about or f"release {target}")
        try:
            async with self._engine() as engine:
                result = await engine.upgrade(to=target, trigger="schedule")
            done = result.transaction
            self.last_outcome = f"upgrade #{done.id} to {target}: {done.state.name}"
            log.warning("unattended %s", self.last_outcome)
        except SpecivodError as error:
            self.last_outcome = f"upgrade to {target} not started: {error}"
            log.warning("unattended %s", self.last_outcome)

    # The webhook's hooks.

    def last_upgrade(self) -> LastUpgrade | None:
        return in_flight_upgrade(self.journal, self.running) or last_upgrade(self.journal)

    async def alert_rollback(self, request: RollbackRequest) -> None:
        running = self.running
        if running is not None and str(running.id) == request.upgrade.transaction_id:
            self.vetoes.reasons[request.upgrade.version] = alert_reason(request)
            self._remember_alerts(request)
            log.warning("failing the verification of %s: %s", running.id, alert_reason(request))
            return
        async with self._engine() as engine:
            current = last_upgrade(self.journal)
            if current is None or current.transaction_id != request.upgrade.transaction_id:
                log.warning(
                    "not rolling back: upgrade #%s is no longer the last one",
                    request.upgrade.transaction_id,
                )
                return
            self._alert_request = request
            try:
                await engine.rollback(trigger="alertmanager")
            except NothingToDo as nothing:
                log.warning("alertmanager rollback: nothing to do: %s", nothing)
            finally:
                self._alert_request = None

    def _remember_alerts(self, request: RollbackRequest) -> None:
        HandledAlerts(self.settings.state.dir).record(
            request.keys, request.upgrade.transaction_id, request.alert_names, self.clock.now()
        )

    def report(self, transaction: Transaction, message: str) -> None:
        """The engine's progress callback: STATUS=, the status API, and the alert names."""
        self.running = None if transaction.state.is_terminal else transaction
        self._set_step(
            f"{transaction.kind.value} #{transaction.id} {transaction.state.name}: {message}"
        )
        request = self._alert_request
        if request is not None and transaction.kind is Kind.ROLLBACK:
            self._alert_request = None
            self.journal.record(transaction, reason=alert_reason(request))
            self._remember_alerts(request)

    def _set_step(self, text: str) -> None:
        self.step = text
        self.notifier.status(text)

    # What the daemon says (built in reports.py).

    def snapshot(self) -> MetricsSnapshot:
        return metrics_snapshot(self)

    def view(self) -> DaemonView:
        return daemon_view(self)

    def operations_view(self) -> OperationsView:
        every = self.settings.backup.every
        return OperationsView(
            backup_interval_seconds=every.total_seconds() if every is not None else None,
            notifications=dict(self.notifications.counts),
        )

    def status(self) -> dict[str, Any]:
        report = status_report(self)
        report["daemon"]["release"] = self.plan.release if self.plan else None
        version = upgrade_target(self.journal.latest())
        if version is not None:
            found = self.catalog.cached(version) or ReleaseUnavailable(
                version, "not read by the daemon yet"
            )
            notes = notes_link(self.settings.policy.release_notes, version)
            report["release"] = release_json(version, found, notes)
        return report

    def reload(self) -> None:
        """SIGHUP: the new file, or the old settings with the new file's problems logged."""
        try:
            new = self._load(self._config_path)
        except ConfigError as error:
            log.error(
                "configuration reload rejected; the old configuration stays in force:\n%s", error
            )
            return
        later = [
            name
            for name in ("http", "alertmanager", "state")
            if getattr(new, name) != getattr(self.settings, name)
        ]
        self.settings = new
        self.poller.settings = new
        log.warning("configuration reloaded from %s", self._config_path)
        if later:
            log.warning("changes to %s take effect after a restart", ", ".join(later))
