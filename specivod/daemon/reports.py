"""What the daemon says: the metrics snapshot, the extra metrics' view and the status API
object, all from its in-memory state (the status object also reads the journal, per request)."""

from __future__ import annotations

import os
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any

from specivod import __version__
from specivod.commands.status import status_object
from specivod.daemon.extra_metrics import DaemonView
from specivod.daemon.scheduling import window_verdict
from specivod.metrics import MetricsSnapshot

if TYPE_CHECKING:
    from specivod.daemon.service import Daemon


def metrics_snapshot(daemon: Daemon) -> MetricsSnapshot:
    now = daemon.clock.now()
    totals, plan, poll = daemon.totals, daemon.plan, daemon.poller.state
    windows = daemon.settings.windows()
    verdict = window_verdict(windows, now, timedelta(0))
    latest = daemon.running or totals.latest
    return MetricsSnapshot(
        build_version=__version__,
        deployed_version=daemon.deployed,
        target_version=plan.target if plan else None,
        upgrade_available=bool(plan and plan.target),
        state=latest.state if latest else None,
        upgrades=totals.upgrades,
        rollbacks=totals.rollbacks,
        upgrade_durations=totals.upgrade_durations,
        last_upgrade_timestamp=totals.last_upgrade_timestamp,
        registry_polls=dict(poll.counts),
        registry_last_success_timestamp=(
            poll.last_success.timestamp() if poll.last_success else None
        ),
        backup_duration_seconds=totals.backup_duration_seconds,
        backup_size_bytes=totals.backup_size_bytes,
        last_backup_timestamp=totals.last_backup_timestamp,
        window_open=verdict.open,
        next_window_timestamp=(verdict.next_opening.timestamp() if verdict.next_opening else None),
        windows_configured=len(windows),
        paused=daemon.controls.paused,
        webhooks=dict(daemon.webhook_counts),
    )


def daemon_view(daemon: Daemon) -> DaemonView:
    gate, plan = daemon.gate, daemon.plan
    return DaemonView(
        needs_a_person=bool(gate and gate.needs_a_person),
        skipped=tuple(daemon.controls.skipped),
        held=tuple(plan.held) if plan else (),
        pin_problem=bool(plan and plan.pin_problem),
        unattended_blocked=gate is None or not gate.may_start,
        engine_up=daemon.engine.health.reachable,
    )


def status_report(daemon: Daemon) -> dict[str, Any]:
    now = daemon.clock.now()
    report = status_object(daemon.settings, daemon.journal, now)
    gate, plan, poll = daemon.gate, daemon.plan, daemon.poller.state
    window = gate.window if gate else window_verdict(daemon.settings.windows(), now, timedelta(0))
    report.update(
        {
            "next_poll": poll.next_poll.isoformat() if poll.next_poll else None,
            "last_poll_result": poll.last_result,
            "window_open": window.open,
            "next_window": window.next_opening.isoformat() if window.next_opening else None,
            "daemon": {
                "pid": os.getpid(),
                "version": __version__,
                "step": daemon.step,
                "poll": poll.as_json(),
                "window": window.reason,
                "window_closes": window.closes_at.isoformat() if window.closes_at else None,
                "unattended": bool(daemon.settings.window),
                "blocked_by": gate.blocked_by if gate else "starting",
                "target": plan.target if plan else None,
                "plan": plan.reason if plan else None,
                "held": dict(plan.held) if plan else {},
                "pin_problem": plan.pin_problem if plan else None,
                "last_outcome": daemon.last_outcome,
                "engine": daemon.engine.health.as_json(),
                "now": now.astimezone(UTC).isoformat(),
            },
        }
    )
    return report
