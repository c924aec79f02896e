"""Every Prometheus metric specivod exports, read from one snapshot of the daemon's state.

Rule: no global registry and no metric objects updated from all over the code. The daemon keeps a
plain ``MetricsSnapshot`` (totals read from the journal, so a restart does not reset them) and a
collector turns it into metric families at scrape time, on a registry the caller owns. A scrape
is rendered at most once a second however many scrapers ask.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from specivod.domain.states import State

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
PREFIX = "specivod_"
UPGRADE_DURATION_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
UPGRADE_RESULTS = (State.SUCCEEDED, State.ABORTED, State.ROLLED_BACK, State.ROLLBACK_FAILED)
REGISTRY_POLL_RESULTS = ("ok", "error")


@dataclass(frozen=True)
class MetricsSnapshot:
    """What the metrics say, at one instant. ``None`` means unknown: the series is left out.

    ``upgrades`` counts finished upgrade transactions by result (a terminal state's value);
    ``rollbacks`` counts rollbacks by (trigger, restore) where restore is "true" when the database
    and data dir were restored; ``upgrade_durations`` are the seconds each finished upgrade took.
    """

    build_version: str
    deployed_version: str | None = None
    target_version: str | None = None
    upgrade_available: bool = False
    state: State | None = None
    upgrades: Mapping[str, int] = field(default_factory=dict)
    rollbacks: Mapping[tuple[str, str], int] = field(default_factory=dict)
    upgrade_durations: Sequence[float] = ()
    last_upgrade_timestamp: float | None = None
    registry_polls: Mapping[str, int] = field(default_factory=dict)
    registry_last_success_timestamp: float | None = None
    backup_duration_seconds: float | None = None
    backup_size_bytes: int | None = None
    last_backup_timestamp: float | None = None
    window_open: bool = False
    next_window_timestamp: float | None = None
    windows_configured: int = 0
    paused: bool = False
    webhooks: Mapping[str, int] = field(default_factory=dict)


def _gauge(name: str, documentation: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        yield GaugeMetricFamily(PREFIX + name, documentation, value=value)


def _info(name: str, documentation: str, version: str | None) -> Iterator[Metric]:
    family = GaugeMetricFamily(PREFIX + name, documentation, labels=["version"])
    if version is not None:
        family.add_metric([version], 1)
    yield family


def _counter(
    name: str, documentation: str, labels: Sequence[str], counts: Mapping[tuple[str, ...], int]
) -> Metric:
    family = CounterMetricFamily(PREFIX + name, documentation, labels=list(labels))
    for label_values, count in sorted(counts.items()):
        family.add_metric(list(label_values), count)
    return family


def _with_zeros(counts: Mapping[str, int], known: Iterable[str]) -> dict[tuple[str, ...], int]:
    merged: dict[tuple[str, ...], int] = {(value,): 0 for value in known}
    merged.update({(key,): count for key, count in counts.items()})
    return merged


def _histogram(name: str, documentation: str, samples: Sequence[float]) -> Metric:
    buckets: list[tuple[str, float]] = [
        (str(bound), sum(1 for sample in samples if sample <= bound))
        for bound in UPGRADE_DURATION_BUCKETS
    ]
    buckets.append(("+Inf", len(samples)))
    return HistogramMetricFamily(
        PREFIX + name, documentation, buckets=buckets, sum_value=math.fsum(samples)
    )


class SnapshotCollector:
    """A prometheus_client collector over ``snapshot()``; one call per scrape."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        now = self._snapshot()
        yield from _info("build_info", "The running specivod.", now.build_version)
        yield from _info(
            "deployed_version_info", "The Specivo version pinned in .env.", now.deployed_version
        )
        yield from _info(
            "target_version_info", "The version the policy would upgrade to.", now.target_version
        )
        yield from _gauge(
            "upgrade_available", "1 when the policy allows a newer version.", now.upgrade_available
        )
        state = GaugeMetricFamily(
            PREFIX + "upgrade_state",
            "1 for the state of the latest upgrade transaction, 0 for the others.",
            labels=["state"],
        )
        for each in State:
            state.add_metric([each.value], 1 if each is now.state else 0)
        yield state
        yield _counter(
            "upgrades_total",
            "Finished upgrade transactions by result.",
            ["result"],
            _with_zeros(now.upgrades, (result.value for result in UPGRADE_RESULTS)),
        )
        yield _counter(
            "rollbacks_total",
            "Rollbacks by trigger and whether data was restored.",
            ["trigger", "restore"],
            {labels: count for labels, count in now.rollbacks.items()},
        )
        yield _histogram(
            "upgrade_duration_seconds", "Time each finished upgrade took.", now.upgrade_durations
        )
        yield from _gauge(
            "last_upgrade_timestamp_seconds",
            "When the last upgrade transaction finished.",
            now.last_upgrade_timestamp,
        )
        yield _counter(
            "registry_polls_total",
            "Registry polls by result.",
            ["result"],
            _with_zeros(now.registry_polls, REGISTRY_POLL_RESULTS),
        )
        yield from _gauge(
            "registry_last_success_timestamp_seconds",
            "When the registry last answered a poll.",
            now.registry_last_success_timestamp,
        )
        yield from _gauge(
            "backup_duration_seconds", "Time the last backup took.", now.backup_duration_seconds
        )
        yield from _gauge("backup_size_bytes", "Size of the last backup.", now.backup_size_bytes)
        yield from _gauge(
            "last_backup_timestamp_seconds",
            "When the last backup finished.",
            now.last_backup_timestamp,
        )
        yield from _gauge(
            "maintenance_window_open", "1 inside a maintenance window.", now.window_open
        )
        yield from _gauge(
            "next_window_timestamp_seconds",
            "When the next maintenance window opens.",
            now.next_window_timestamp,
        )
        yield from _gauge(
            "maintenance_windows_configured",
            "Number of maintenance windows; 0 means never unattended.",
            now.windows_configured,
        )
        yield from _gauge(
            "unattended_upgrades_paused", "1 while an operator paused upgrades.", now.paused
        )
        yield _counter(
            "alertmanager_webhooks_total",
            "Alertmanager webhook deliveries by result.",
            ["result"],
            _with_zeros(now.webhooks, ()),
        )


def make_registry(snapshot: Callable[[], MetricsSnapshot]) -> CollectorRegistry:
    """A fresh registry holding only specivod's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry


class CachedRenderer:
    """The exposition text, rendered at most once per ``max_age`` seconds and shared by every
    scrape in between. Rendering is synchronous (well under a millisecond), so concurrent
    scrapes on one event loop can never render twice."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        max_age: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._max_age = max_age
        self._monotonic = monotonic
        self._text = b""
        self._rendered_at = -math.inf
        self.renders = 0

    def _fresh(self) -> bool:
        return self._monotonic() - self._rendered_at < self._max_age

    def render(self) -> bytes:
        if not self._fresh():
            self._text = generate_latest(self._registry)
            self._rendered_at = self._monotonic()
            self.renders += 1
        return self._text
