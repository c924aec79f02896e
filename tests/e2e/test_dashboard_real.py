"""Every panel of the Grafana dashboard (config/grafana/specivod.json) shows data from a real
Prometheus that scraped the real daemon on the sandbox: each panel's expression, with Grafana's
variables put in, is asked of Prometheus' HTTP API and must answer at least one finite sample.
A metric renamed in specivod or mistyped in the dashboard answers nothing and fails here.

So that every series exists, the deployment first has a history: a CLI upgrade to the
never-healthy release was rolled back by the health gate (an upgrade result, a rollback, a
duration and a backup), and one version is skipped. The daemon then runs with its only window
closed (it has a target but does not upgrade: the target, the next window and "blocked" show).
"""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.config import specivod_config, write_config
from sandbox.deployment import SandboxDeployment
from sandbox.releases import BASELINE, MIGRATES_THEN_FAILS, NEVER_HEALTHY
from tests.conftest import Specivod, Stack
from tests.e2e.test_daemon_real import (
    Notifications,
    notifications,
    prometheus_value,
    start_daemon,
    start_prometheus,
    status_of,
)
from tests.support.ports import free_port
from tests.support.waiting import wait_for
from tests.unit.test_grafana_dashboard import load_dashboard, queries

__all__ = ["notifications"]  # the fixture, imported so that pytest finds it here

pytestmark = pytest.mark.stack

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def closed_window() -> dict[str, object]:
    """One window a day, opening three hours from now: closed for the whole test."""
    opens = datetime.now(UTC) + timedelta(hours=3)
    closes = opens + timedelta(hours=1)
    return {
        "days": ALL_DAYS,
        "start": opens.strftime("%H:%M"),
        "end": closes.strftime("%H:%M"),
        "timezone": "UTC",
    }


def finite_samples(prometheus: str, expression: str) -> list[tuple[dict[str, str], float]]:
    samples = [
        (series["metric"], float(series["value"][1]))
        for series in prometheus_value(prometheus, expression)
    ]
    return [(labels, value) for labels, value in samples if math.isfinite(value)]


def test_every_panel_query_returns_data_from_a_real_prometheus(
    stack: Stack, deployment: SandboxDeployment, tmp_path: Path, notifications: Notifications
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    config = specivod_config(
        deployment,
        tmp_path,
        registry={"image": deployment.images.app, "timeout": "10s", "poll_interval": "1s"},
        health={"retries": 3},
        window=[closed_window()],
        http={"listen": listen},
    )
    specivod = Specivod(write_config(tmp_path / "specivod.toml", config))
    failed = specivod("upgrade", "--now", "--to", NEVER_HEALTHY)
    assert failed.returncode == 1, failed.stderr
    skipped = specivod("skip", MIGRATES_THEN_FAILS)
    assert skipped.returncode == 0, skipped.stderr

    log = tmp_path / "daemon.log"
    daemon = start_daemon(specivod.config, notifications, log)
    prometheus, prometheus_url = start_prometheus(tmp_path, listen)
    try:
        wait_for("READY=1", lambda: "READY=1" in notifications.drain(), 30)
        wait_for(
            "a registry poll", lambda: status_of(f"http://{listen}")["last_poll_result"] == "ok", 30
        )
        wait_for(
            "three scrapes after the first poll",
            lambda: bool(
                finite_samples(
                    prometheus_url,
                    "count_over_time(specivod_registry_last_success_timestamp_seconds[1m]) >= 3",
                )
            ),
            60,
        )

        answers = {
            query.where: finite_samples(prometheus_url, query.expr)
            for query in queries(load_dashboard())
            if query.is_panel
        }
        for where, samples in answers.items():
            sys.stderr.write(f"{where}: {samples}\n")
        empty = [where for where, samples in answers.items() if not samples]
        assert not empty, f"panels without data: {empty}"

        def shown(title: str, label: str) -> set[str]:
            return {
                labels[label]
                for where, samples in answers.items()
                if where.split(" ", 2)[2].startswith(repr(title))
                for labels, _ in samples
            }

        assert shown("Deployed version", "version") == {BASELINE}
        assert shown("Last transaction", "state") == {"rolled_back"}
        assert shown("Skipped versions", "version") == {MIGRATES_THEN_FAILS}
        assert shown("Rollbacks by trigger", "trigger") == {"health_gate"}
        assert daemon.poll() is None
    finally:
        for process in (daemon, prometheus):
            if process.poll() is None:
                process.kill()
                process.wait()
        sys.stderr.write(log.read_text()[-4000:])
