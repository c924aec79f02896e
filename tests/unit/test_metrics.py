"""Metrics: every DESIGN.md metric from one snapshot, promtool-clean, rendered once a second."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from specivod.domain.states import State
from specivod.metrics import CachedRenderer, MetricsSnapshot, make_registry

FULL = MetricsSnapshot(
    build_version="0.1.0",
    deployed_version="0.1.10",
    target_version="0.1.11",
    upgrade_available=True,
    state=State.VERIFYING,
    upgrades={"succeeded": 3, "rolled_back": 1},
    rollbacks={("alertmanager", "false"): 1, ("verification", "true"): 2},
    upgrade_durations=(45.0, 200.0, 4000.0),
    last_upgrade_timestamp=1_764_150_000.0,
    registry_polls={"ok": 12, "error": 2},
    registry_last_success_timestamp=1_764_150_100.0,
    backup_duration_seconds=12.5,
    backup_size_bytes=1_288_490_188,
    last_backup_timestamp=1_764_149_000.0,
    window_open=True,
    next_window_timestamp=1_764_200_000.0,
    windows_configured=2,
    webhooks={"accepted": 1, "duplicate": 19},
)

DESIGN_METRICS = {
    "build_info",
    "deployed_version_info",
    "target_version_info",
    "upgrade_available",
    "upgrade_state",
    "upgrades_total",
    "rollbacks_total",
    "upgrade_duration_seconds",
    "last_upgrade_timestamp_seconds",
    "registry_polls_total",
    "registry_last_success_timestamp_seconds",
    "backup_duration_seconds",
    "backup_size_bytes",
    "last_backup_timestamp_seconds",
    "maintenance_window_open",
    "next_window_timestamp_seconds",
    "alertmanager_webhooks_total",
}


def render(snapshot: MetricsSnapshot) -> str:
    return CachedRenderer(make_registry(lambda: snapshot)).render().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def names(text: str) -> set[str]:
    return {
        line.split()[2].removeprefix("specivod_").removesuffix("_total")
        + ("_total" if line.split()[3] == "counter" else "")
        for line in text.splitlines()
        if line.startswith("# TYPE ")
    }


@pytest.mark.parametrize("snapshot", [FULL, MetricsSnapshot(build_version="0.1.0")])
def test_promtool_accepts_the_output(snapshot: MetricsSnapshot) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: apt-get install prometheus (scripts/bootstrap does)")
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=render(snapshot).encode(),
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_every_design_metric_is_exported() -> None:
    assert names(render(FULL)) >= DESIGN_METRICS


def test_values_come_from_the_snapshot() -> None:
    got = samples(render(FULL))
    assert got[("specivod_deployed_version_info", (("version", "0.1.10"),))] == 1
    assert got[("specivod_target_version_info", (("version", "0.1.11"),))] == 1
    assert got[("specivod_build_info", (("version", "0.1.0"),))] == 1
    assert got[("specivod_upgrade_available", ())] == 1
    assert got[("specivod_upgrades_total", (("result", "succeeded"),))] == 3
    assert got[("specivod_upgrades_total", (("result", "rollback_failed"),))] == 0
    key = ("specivod_rollbacks_total", (("restore", "true"), ("trigger", "verification")))
    assert got[key] == 2
    assert got[("specivod_registry_polls_total", (("result", "error"),))] == 2
    assert got[("specivod_backup_size_bytes", ())] == 1_288_490_188
    assert got[("specivod_next_window_timestamp_seconds", ())] == 1_764_200_000
    assert got[("specivod_maintenance_window_open", ())] == 1
    assert got[("specivod_alertmanager_webhooks_total", (("result", "duplicate"),))] == 19


def test_upgrade_state_is_one_hot_over_every_state() -> None:
    for current in State:
        got = samples(render(replace(FULL, state=current)))
        states = {
            dict(labels)["state"]: value
            for (name, labels), value in got.items()
            if name == "specivod_upgrade_state"
        }
        assert set(states) == {state.value for state in State}
        assert states[current.value] == 1
        assert sum(states.values()) == 1


def test_no_transaction_yet_means_no_state_is_hot() -> None:
    got = samples(render(MetricsSnapshot(build_version="0.1.0")))
    assert all(v == 0 for (name, _), v in got.items() if name == "specivod_upgrade_state")


def test_the_duration_histogram_counts_cumulatively() -> None:
    got = samples(render(FULL))
    bucket = "specivod_upgrade_duration_seconds_bucket"
    assert got[(bucket, (("le", "60.0"),))] == 1
    assert got[(bucket, (("le", "300.0"),))] == 2
    assert got[(bucket, (("le", "3600.0"),))] == 2
    assert got[(bucket, (("le", "+Inf"),))] == 3
    assert got[("specivod_upgrade_duration_seconds_sum", ())] == 4245


def test_unknown_values_are_left_out_not_zero() -> None:
    text = render(MetricsSnapshot(build_version="0.1.0"))
    got = samples(text)
    assert "specivod_deployed_version_info" not in {name for name, _ in got}
    assert "specivod_last_backup_timestamp_seconds" not in text
    assert "specivod_next_window_timestamp_seconds" not in text


def test_totals_survive_a_restart_because_they_come_from_the_snapshot() -> None:
    before = samples(render(FULL))
    after_restart = samples(render(FULL))
    assert before == after_restart


def test_registries_are_independent_and_the_global_one_is_untouched() -> None:
    before = {family.name for family in REGISTRY.collect()}
    first = make_registry(lambda: FULL)
    second = make_registry(lambda: replace(FULL, deployed_version="9.9.9"))
    assert "0.1.10" in CachedRenderer(first).render().decode()
    assert "9.9.9" in CachedRenderer(second).render().decode()
    assert {family.name for family in REGISTRY.collect()} == before


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_renders_at_most_once_a_second() -> None:
    current = {"snapshot": FULL}
    clock = FakeMonotonic()
    renderer = CachedRenderer(make_registry(lambda: current["snapshot"]), monotonic=clock)
    first = renderer.render()
    current["snapshot"] = replace(FULL, deployed_version="0.1.11")
    for _ in range(200):
        assert renderer.render() is first
    clock.now += 0.999
    assert renderer.render() is first
    assert renderer.renders == 1
    clock.now += 0.001
    assert b'deployed_version_info{version="0.1.11"}' in renderer.render()
    assert renderer.renders == 2
