"""A real Alertmanager (Debian's ``prometheus-alertmanager`` 0.25) routed to the real daemon's
webhook, with the bearer token from a ``credentials_file``: after an unattended upgrade, a
non-matching alert repeated by Alertmanager rolls nothing back; a matching one, repeated several
times, rolls the upgrade back exactly once, and the daemon does not upgrade to that version again.

Alertmanager's config is config/alertmanager/alertmanager.yml (the example operators copy) with
only the webhook URL and the token file changed; ``amtool check-config`` validates both.
``upgraded_daemon`` is shared with test_webhook_hostile_real.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sandbox.config import specivod_config, write_config
from sandbox.deployment import SandboxDeployment
from sandbox.releases import BASELINE
from tests.conftest import Stack
from tests.e2e.test_daemon_real import (
    ROOT,
    Notifications,
    get,
    notifications,
    retag,
    start_daemon,
    status_of,
)
from tests.support.ports import free_port
from tests.support.waiting import wait_for

__all__ = ["notifications"]  # the fixture, imported so that pytest finds it here

pytestmark = pytest.mark.stack

TARGET = "0.1.13-am.1"
"""A copy of the healthy 0.1.11 under a pre-release tag; only ``RANGE`` (this file's) picks it,
and it does not pick test_daemon_real's 0.1.12-daemon.1 (the bounds have no pre-release part:
node-semver's ``test(include_prerelease=True)`` misorders pre-releases against pre-release
bounds, e.g. ``<0.1.12-am.2`` rejects 0.1.12-am.1)."""
RANGE = ">0.1.12 <0.2.0"
EXAMPLE = ROOT / "config" / "alertmanager" / "alertmanager.yml"
EXAMPLE_URL = "http://127.0.0.1:9717/api/v1/alertmanager"
EXAMPLE_TOKEN_FILE = "/etc/specivod/webhook.token"
MATCHER = 'alertname="SpecivoDown"'
WEBHOOKS = re.compile(rb'^specivod_alertmanager_webhooks_total\{result="(\w+)"\} (\S+)$', re.M)
POLLS = re.compile(rb'^specivod_registry_polls_total\{result="ok"\} (\S+)$', re.M)


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    base: str
    config: Path
    token: str
    token_file: Path
    log: Path

    @property
    def webhook(self) -> str:
        return f"{self.base}/api/v1/alertmanager"

    def cli(self, *arguments: str) -> dict[str, Any]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
        result = subprocess.run(
            [sys.executable, "-m", "specivod", "--config", str(self.config), *arguments],
            capture_output=True,
            text=True,
            env=environment,
            cwd=ROOT,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def history(self) -> list[dict[str, Any]]:
        transactions: list[dict[str, Any]] = self.cli("history", "--json")["transactions"]
        return transactions

    def webhook_counts(self) -> dict[str, float]:
        metrics = get(f"{self.base}/metrics")
        return {name.decode(): float(value) for name, value in WEBHOOKS.findall(metrics)}

    def ok_polls(self) -> float:
        found = POLLS.search(get(f"{self.base}/metrics"))
        assert found is not None
        return float(found.group(1))


@pytest.fixture
def upgraded_daemon(
    stack: Stack, deployment: SandboxDeployment, tmp_path: Path, notifications: Notifications
) -> Iterator[Daemon]:
    """The daemon (always-open window, 1 s polls, webhook token and matcher set) after its
    unattended upgrade from ``BASELINE`` to ``TARGET`` succeeded."""
    listen = f"127.0.0.1:{free_port()}"
    token = secrets.token_urlsafe(24)
    token_file = tmp_path / "webhook.token"
    token_file.write_text(token + "\n")
    config = specivod_config(
        deployment,
        tmp_path,
        registry={"image": deployment.images.app, "timeout": "10s", "poll_interval": "1s"},
        policy={"range": RANGE, "prerelease": True, "expected_duration": "1s"},
        window=[
            {
                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                "start": "00:00",
                "end": "00:00",
                "timezone": "UTC",
            }
        ],
        http={"listen": listen, "token_file": str(token_file)},
        alertmanager={"matchers": [MATCHER], "watch_period": "1h"},
    )
    config_path = write_config(tmp_path / "specivod.toml", config)
    retag(stack.registry.url, deployment.images.app_path, "0.1.11", TARGET)
    log = tmp_path / "daemon.log"
    process = start_daemon(config_path, notifications, log)
    daemon = Daemon(process, f"http://{listen}", config_path, token, token_file, log)
    try:
        wait_for("READY=1", lambda: "READY=1" in notifications.drain(), 30)
        wait_for("the unattended upgrade", lambda: _upgraded(daemon.base), 180)
        yield daemon
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        sys.stderr.write(log.read_text()[-6000:])


def _upgraded(base: str) -> bool:
    status = status_of(base)
    last = status["transaction"]
    return (
        not status["in_progress"]
        and last is not None
        and (last["kind"], last["to"], last["state"]) == ("upgrade", TARGET, "succeeded")
    )


@dataclass
class Alertmanager:
    process: subprocess.Popen[bytes]
    url: str

    def fire(self, **labels: str) -> None:
        alert = {
            "labels": {"severity": "critical", **labels},
            "annotations": {"summary": f"{labels.get('alertname')} fired by the e2e test"},
            "startsAt": datetime.now(UTC).isoformat(),
        }
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps([alert]).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200


def alertmanager_config(root: Path, webhook_url: str, token_file: Path) -> Path:
    """The example config with this test's webhook URL and token file; both pass amtool."""
    example = EXAMPLE.read_text()
    assert EXAMPLE_URL in example and EXAMPLE_TOKEN_FILE in example
    config = root / "alertmanager.yml"
    config.write_text(
        example.replace(EXAMPLE_URL, webhook_url).replace(EXAMPLE_TOKEN_FILE, str(token_file))
    )
    for path in (EXAMPLE, config):
        checked = subprocess.run(
            ["amtool", "check-config", str(path)], capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    return config


@pytest.fixture
def alertmanager(tmp_path: Path, upgraded_daemon: Daemon) -> Iterator[Alertmanager]:
    config = alertmanager_config(tmp_path, upgraded_daemon.webhook, upgraded_daemon.token_file)
    port = free_port()
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as stream:
        process = subprocess.Popen(
            [
                "prometheus-alertmanager",
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=stream,
            stderr=subprocess.STDOUT,
        )
    manager = Alertmanager(process, f"http://127.0.0.1:{port}")
    try:
        wait_for("Alertmanager ready", lambda: get(f"{manager.url}/-/ready") is not None, 30)
        yield manager
    finally:
        process.terminate()
        process.wait(timeout=30)
        sys.stderr.write(log.read_text()[-3000:])


def kinds(history: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(t["kind"], t["state"], t["to"]) for t in history]


def test_a_repeated_matching_alert_rolls_back_once_and_the_version_is_not_retried(
    upgraded_daemon: Daemon, alertmanager: Alertmanager
) -> None:
    daemon = upgraded_daemon
    assert kinds(daemon.history()) == [("upgrade", "succeeded", TARGET)]

    # Phase 1: an alert the matchers do not select, delivered and repeated: nothing happens.
    alertmanager.fire(alertname="DiskFull")
    wait_for("two DiskFull deliveries", lambda: daemon.webhook_counts()["ignored"] >= 2, 60)
    assert daemon.webhook_counts()["accepted"] == 0
    assert status_of(daemon.base)["deployed"] == TARGET
    assert kinds(daemon.history()) == [("upgrade", "succeeded", TARGET)]

    # Phase 2: the matching alert, kept firing for several repeats.
    ignored_before = daemon.webhook_counts()["ignored"]
    alertmanager.fire(alertname="SpecivoDown")

    def matching_deliveries() -> float:
        counts = daemon.webhook_counts()
        return counts["accepted"] + counts["duplicate"]

    wait_for("three SpecivoDown deliveries", lambda: matching_deliveries() >= 3, 120)
    wait_for(
        "the rollback to finish",
        lambda: (
            status_of(daemon.base)["deployed"] == BASELINE
            and not status_of(daemon.base)["in_progress"]
        ),
        180,
    )

    # Later polls and repeats change nothing: the daemon does not go back to TARGET.
    polls = daemon.ok_polls()
    wait_for("four more registry polls", lambda: daemon.ok_polls() >= polls + 4, 60)
    deliveries = matching_deliveries()
    wait_for("one more SpecivoDown delivery", lambda: matching_deliveries() > deliveries, 60)

    counts = daemon.webhook_counts()
    sys.stderr.write(f"webhook deliveries by result: {counts}\n")
    assert counts["accepted"] == 1
    assert counts["duplicate"] >= 3
    assert counts["ignored"] >= ignored_before  # DiskFull keeps being delivered and ignored
    assert sum(counts[name] for name in ("unauthorized", "bad_request", "error")) == 0

    history = daemon.history()
    assert kinds(history) == [
        ("rollback", "rolled_back", BASELINE),
        ("upgrade", "succeeded", TARGET),
    ], history
    rollback = history[0]
    assert rollback["trigger"] == "alertmanager"
    assert "SpecivoDown" in rollback["reason"]
    assert "DiskFull" not in rollback["reason"]
    status = status_of(daemon.base)
    assert status["deployed"] == BASELINE
    assert status["daemon"]["target"] is None
    check = daemon.cli("check", "--json")
    assert check["deployed"] == BASELINE
    assert check["target"] is None
    assert f"skipped: {TARGET}" in check["reason"], check
    metrics = get(f"{daemon.base}/metrics")
    assert b'specivod_rollbacks_total{restore="' in metrics
    assert daemon.process.poll() is None
