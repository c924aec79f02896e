"""The daemon's metrics that ``metrics.py`` does not carry yet: whether a person is needed (a
ROLLBACK_FAILED nobody resolved), which versions an operator skipped, which releases
``policy.min_age`` holds, and whether the pinned version is a release at all.

Rule: read from the same in-memory view as the snapshot, registered next to it on the same
registry; nothing here touches the disk at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from specivod.metrics import PREFIX


@dataclass(frozen=True)
class DaemonView:
    needs_a_person: bool = False
    skipped: Sequence[str] = ()
    held: Sequence[str] = ()
    pin_problem: bool = False
    unattended_blocked: bool = True


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
        for name, help_text, versions in (
            ("skipped_version_info", "Versions an operator skipped.", view.skipped),
            ("held_version_info", "Releases policy.min_age still holds back.", view.held),
        ):
            family = GaugeMetricFamily(PREFIX + name, help_text, labels=["version"])
            for version in sorted(versions):
                family.add_metric([version], 1)
            yield family
