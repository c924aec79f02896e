"""Scheduled backups and notifications on the real stack: the real daemon, with ``backup.every``
set and a window configured, takes no backup while the window is closed; reloaded (SIGHUP) with
the window open it takes one (reason "scheduled", a real dump of the sandbox's PostgreSQL);
reloaded with a database that does not exist, the next due backup fails and the failure reaches
a local HTTP receiver through apprise's ``json://`` URL, read from the notifications URLs file,
whose credentials never reach the log. A CLI restore run beside the daemon is notified too.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.config import specivod_config, write_config
from sandbox.deployment import SandboxDeployment
from sandbox.releases import BASELINE
from specivod.adapters.backup.backups import backups_in
from tests.conftest import Specivod, Stack
from tests.e2e.test_daemon_real import (
    Notifications,
    get,
    notifications,
    start_daemon,
    status_of,
)
from tests.support.json_receiver import JsonReceiver, json_receiver
from tests.support.ports import free_port
from tests.support.waiting import wait_for

__all__ = ["notifications"]  # the fixture, imported so that pytest finds it here

pytestmark = pytest.mark.stack

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
OPEN: dict[str, object] = {"days": ALL_DAYS, "start": "00:00", "end": "00:00", "timezone": "UTC"}
TOKEN = "n0tify-t0ken"


def closed_window() -> dict[str, object]:
    opens = datetime.now(UTC) + timedelta(hours=3)
    return {
        "days": ALL_DAYS,
        "start": opens.strftime("%H:%M"),
        "end": (opens + timedelta(hours=1)).strftime("%H:%M"),
        "timezone": "UTC",
    }


@pytest.fixture
def receiver() -> Iterator[JsonReceiver]:
    with json_receiver() as made:
        yield made


def test_scheduled_backups_in_the_window_and_notifications_of_outcomes(
    stack: Stack,
    deployment: SandboxDeployment,
    tmp_path: Path,
    notifications: Notifications,
    receiver: JsonReceiver,
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    base = f"http://{listen}"
    urls = tmp_path / "notify.urls"
    urls.write_text(f"# the test's receiver\njson://specivod:{TOKEN}@127.0.0.1:{receiver.port}/\n")

    def config(window: dict[str, object], **backup: object) -> Path:
        written = specivod_config(
            deployment,
            tmp_path,
            registry={"image": deployment.images.app, "timeout": "10s", "poll_interval": "1s"},
            policy={"range": f"<={BASELINE}"},
            backup={"every": "1h", **backup},
            window=[window],
            http={"listen": listen},
            notifications={"urls_file": str(urls)},
        )
        return write_config(tmp_path / "specivod.toml", written)

    config_path = config(closed_window())
    backups_dir = tmp_path / "backups"
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config_path, notifications, log)
    try:
        wait_for("READY=1", lambda: "READY=1" in notifications.drain(), 30)
        wait_for("a first poll", lambda: status_of(base)["last_poll_result"] == "ok", 30)
        time.sleep(3)  # three scheduler ticks with a backup due and the window closed
        assert backups_in(backups_dir) == []
        metrics = get(f"{base}/metrics")
        assert b"specivod_backup_interval_seconds 3600.0" in metrics

        config(OPEN)
        daemon.send_signal(signal.SIGHUP)
        wait_for("a scheduled backup", lambda: bool(backups_in(backups_dir)), 120)
        [taken] = backups_in(backups_dir)
        assert (taken.reason, taken.version, taken.valid) == ("scheduled", BASELINE, True)
        assert taken.database.size > 0
        wait_for(
            "the last backup in the metrics",
            lambda: b"specivod_last_backup_timestamp_seconds " in get(f"{base}/metrics"),
            10,
        )

        config(OPEN, every="2s", database_name="no_such_database")
        daemon.send_signal(signal.SIGHUP)
        wait_for("a failed backup's notification", lambda: bool(receiver.received), 60)
        first = receiver.received[0]
        assert (first["title"], first["type"]) == ("specivod: scheduled backup FAILED", "failure")
        assert "no_such_database" in first["message"]
        assert [backup.id for backup in backups_in(backups_dir)] == [taken.id]

        good = config(OPEN)
        daemon.send_signal(signal.SIGHUP)
        wait_for(
            "the third reload", lambda: log.read_text().count("configuration reloaded") == 3, 10
        )
        wait_for("the daemon idle", lambda: status_of(base)["daemon"]["step"] == "idle", 60)
        restored = Specivod(good)("restore", taken.id)
        assert restored.returncode == 0, restored.stderr
        wait_for(
            "the restore's notification",
            lambda: any(title.startswith("specivod: restore #1 ") for title in receiver.titles()),
            30,
        )
        [outcome] = [got for got in receiver.received if got["title"] != first["title"]]
        assert outcome["title"] == "specivod: restore #1 ROLLED_BACK", outcome
        assert outcome["type"] == "success"
        expected = f'specivod_notifications_total{{result="sent"}} {len(receiver.received)}.0'
        wait_for(
            "the notifications counted", lambda: expected.encode() in get(f"{base}/metrics"), 10
        )
        assert b'specivod_notifications_total{result="failed"} 0.0' in get(f"{base}/metrics")

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        text = log.read_text()
        sys.stderr.write(text[-4000:])
    assert TOKEN not in text
