"""The demo's daemon part: ``specivod run`` with a window open now upgrades unattended, and a
real Alertmanager's firing alert that matches the configured matchers rolls that upgrade back.

Everything listens on 127.0.0.1; every process started here is stopped by ``DaemonDemo.stop``,
also when a step failed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox.config import specivod_config, write_config
from sandbox.deployment import SandboxDeployment
from tests.support.ports import free_port
from tests.support.waiting import wait_for

ROOT = Path(__file__).parent.parent
RANGE = ">0.1.10 <0.2.0"
"""Holds only 0.1.11 (healthy, same schema) of the sandbox's releases."""
TARGET = "0.1.11"
MATCHER = 'alertname="SpecivoDown"'
EXAMPLE = ROOT / "config" / "alertmanager" / "alertmanager.yml"
EXAMPLE_URL = "http://127.0.0.1:9717/api/v1/alertmanager"
EXAMPLE_TOKEN_FILE = "/etc/specivod/webhook.token"  # noqa: S105 (a path, no secret)
_POLL_LINE = re.compile(r"registry poll: ")
ALWAYS_OPEN = {
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    "start": "00:00",
    "end": "00:00",
    "timezone": "UTC",
}


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:
        body: bytes = answer.read()
        return body


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class DaemonDemo:
    """The daemon and Alertmanager for one sandbox deployment: their files under ``root``,
    specivod's journal and backups under ``state_root`` (the CLI's, so history continues)."""

    def __init__(self, deployment: SandboxDeployment, root: Path, state_root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.base = f"http://127.0.0.1:{free_port()}"
        self.token_file = root / "webhook.token"
        self.token_file.write_text(secrets.token_urlsafe(24) + "\n")
        config = specivod_config(
            deployment,
            state_root,
            registry={"image": deployment.images.app, "timeout": "10s", "poll_interval": "1s"},
            policy={"range": RANGE, "expected_duration": "1s"},
            window=[ALWAYS_OPEN],
            http={"listen": self.base.removeprefix("http://"), "token_file": str(self.token_file)},
            alertmanager={"matchers": [MATCHER], "watch_period": "1h"},
        )
        self.config = write_config(root / "specivod.toml", config)
        self.daemon: subprocess.Popen[bytes] | None = None
        self.alertmanager: subprocess.Popen[bytes] | None = None
        self.alertmanager_url = ""

    def status(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(_get(f"{self.base}/api/v1/status"))
        return document

    def start_daemon(self) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
        with (self.root / "daemon.log").open("wb") as log:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "specivod", "--config", str(self.config), "-v", "run"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=ROOT,
            )
        wait_for("the daemon's status page", lambda: bool(self.status()), 30)

    def wait_until_settled(self, kind: str, to: str, state: str, timeout: float) -> None:
        def settled() -> bool:
            status = self.status()
            last = status["transaction"]
            return (
                not status["in_progress"]
                and last is not None
                and (last["kind"], last["to"], last["state"]) == (kind, to, state)
            )

        wait_for(f"{kind} to {to} {state}", settled, timeout)

    def wait_for_polls(self, count: int, timeout: float) -> None:
        def polls() -> int:
            return len(_POLL_LINE.findall((self.root / "daemon.log").read_text()))

        seen = polls()
        wait_for(f"{count} more registry polls", lambda: polls() >= seen + count, timeout)

    def start_alertmanager(self) -> None:
        """Alertmanager with the example config, only its webhook URL and token file changed."""
        config = self.root / "alertmanager.yml"
        config.write_text(
            EXAMPLE.read_text()
            .replace(EXAMPLE_URL, f"{self.base}/api/v1/alertmanager")
            .replace(EXAMPLE_TOKEN_FILE, str(self.token_file))
        )
        subprocess.run(["amtool", "check-config", str(config)], check=True, capture_output=True)
        port = free_port()
        self.alertmanager_url = f"http://127.0.0.1:{port}"
        with (self.root / "alertmanager.log").open("wb") as log:
            self.alertmanager = subprocess.Popen(
                [
                    "prometheus-alertmanager",
                    f"--config.file={config}",
                    f"--storage.path={self.root / 'alertmanager-data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--cluster.listen-address=",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for("Alertmanager ready", lambda: bool(_get(f"{self.alertmanager_url}/-/ready")), 30)

    def fire(self, alertname: str) -> None:
        alert = {
            "labels": {"alertname": alertname, "severity": "critical"},
            "annotations": {"summary": f"{alertname} fired by scripts/demo"},
            "startsAt": datetime.now(UTC).isoformat(),
        }
        request = urllib.request.Request(
            f"{self.alertmanager_url}/api/v2/alerts",
            data=json.dumps([alert]).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        _stop(self.alertmanager)
        _stop(self.daemon)
