"""Every sample name specivod's /metrics can carry: the daemon's registry with each optional
series present, rendered by prometheus-client — what dashboards and alert rules may name."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from specivod.daemon.extra_metrics import (
    DaemonCollector,
    DaemonView,
    OperationsCollector,
    OperationsView,
)
from specivod.domain.states import State
from specivod.metrics import MetricsSnapshot, make_registry


def exported_names() -> set[str]:
    snapshot = MetricsSnapshot(
        build_version="1.0.0",
        deployed_version="0.1.10",
        target_version="0.1.11",
        upgrade_available=True,
        state=State.SUCCEEDED,
        upgrades={"succeeded": 1},
        rollbacks={("health_gate", "false"): 1},
        upgrade_durations=(42.0,),
        last_upgrade_timestamp=1.0,
        registry_polls={"ok": 1},
        registry_last_success_timestamp=1.0,
        backup_duration_seconds=1.0,
        backup_size_bytes=1,
        last_backup_timestamp=1.0,
        window_open=True,
        next_window_timestamp=1.0,
        windows_configured=1,
        paused=False,
        webhooks={"accepted": 1},
    )
    registry = make_registry(lambda: snapshot)
    registry.register(DaemonCollector(lambda: DaemonView(skipped=("0.2.1",), held=("0.2.2",))))
    registry.register(
        OperationsCollector(
            lambda: OperationsView(backup_interval_seconds=86400.0, notifications={"sent": 1})
        )
    )
    text = generate_latest(registry).decode()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
