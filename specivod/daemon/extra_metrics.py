"""The daemon's metrics that ``metrics.py`` does not carry yet: whether a person is needed (a
ROLLBACK_FAILED nobody resolved), whether the Docker Engine answers, which versions an operator
skipped, which releases
``policy.min_age`` holds, whether the pinned version is a release at all, the scheduled backups'
interval and the notifications sent.

Rule: read from the same in-memory view as the snapshot, registered next to it on the same
registry; nothing here touches the disk at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from specivod.metrics import PREFIX


@dataclass(frozen=True)
class DaemonView:
    needs_a_person: bool = False
    skipped: Sequence[str] = ()
    held: Sequence[str] = ()
    pin_problem: bool = False
    unattended_blocked: bool = True
    engine_up: bool | None = None
    """Whether the Docker Engine answered the last ping; ``None`` (absent) before the first."""


class DaemonCollector:
    def __init__(self, view: Callable[[], DaemonView]) -> None:
        self._view = view

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        view = self._view()
        yield GaugeMetricFamily(
            PREFIX + "needs_attention",
            "1 while a failed rollback waits for a person (specivod resolve).",
            value=view.needs_a_person,
        )
        yield GaugeMetricFamily(
            PREFIX + "deployed_version_unversioned",
            "1 when the deployment pins no semver release (nothing is upgraded).",
            value=view.pin_problem,
        )
        yield GaugeMetricFamily(
            PREFIX + "unattended_upgrades_blocked",
            "1 while something (window, pause, a person needed, the pin) stops upgrades.",
            value=view.unattended_blocked,
        )
        if view.engine_up is not None:
            yield GaugeMetricFamily(
                PREFIX + "engine_up",
                "1 when the Docker Engine answered the daemon's last ping, 0 when it did not.",
                value=view.engine_up,
            )
        for name, help_text, versions in (
            ("skipped_version_info", "Versions an operator skipped.", view.skipped),
            ("held_version_info", "Releases policy.min_age still holds back.", view.held),
        ):
            family = GaugeMetricFamily(PREFIX + name, help_text, labels=["version"])
            for version in sorted(versions):
                family.add_metric([version], 1)
            yield family


@dataclass(frozen=True)
class OperationsView:
    backup_interval_seconds: float | None = None
    """``backup.every``; None (the metric absent) when scheduled backups are not configured."""
    notifications: Mapping[str, int] | None = None
    """Notifications by result (sent, failed), one per URL."""


class OperationsCollector:
    def __init__(self, view: Callable[[], OperationsView]) -> None:
        self._view = view

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        view = self._view()
        if view.backup_interval_seconds is not None:
            yield GaugeMetricFamily(
                PREFIX + "backup_interval_seconds",
                "backup.every: a scheduled backup is taken when the newest is older than this.",
                value=view.backup_interval_seconds,
            )
        family = CounterMetricFamily(
            PREFIX + "notifications",
            "Notifications (transaction outcomes, failed scheduled backups) by result, per URL.",
            labels=["result"],
        )
        for result, count in sorted((view.notifications or {}).items()):
            family.add_metric([result], count)
        yield family
