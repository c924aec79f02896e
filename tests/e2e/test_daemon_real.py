"""``specivod run`` on the real stack: the daemon notices a release pushed after it started and
upgrades to it inside an (always open) window; a real Prometheus scrapes it; promtool accepts
its metrics; a CLI upgrade while the daemon's transaction runs is refused "busy"; systemd
notifications arrive on a real unix datagram socket; SIGTERM while idle exits 0.

Starting the daemon in a test: ``start_daemon(config, notify_socket)`` below runs
``python -m specivod --config CONFIG run`` with ``NOTIFY_SOCKET`` (and ``WATCHDOG_USEC``) set;
``wait_for_status(url, predicate)`` polls ``/api/v1/status``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.config import specivod_config, write_config
from sandbox.deployment import SandboxDeployment
from sandbox.releases import BASELINE
from tests.conftest import Stack
from tests.support.oci_push import RegistryConnection, push_image
from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.stack

NEW = "0.1.12-daemon.1"
"""Pushed after the daemon started: a copy of 0.1.11 under a pre-release tag, which only a
policy with ``prerelease = true`` (this test's, whose range also stops at 0.1.12 so the alertmanager
tests' 0.1.13-am.1 in the shared registry is not a target) can pick."""
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.oci.image.manifest.v1+json"
)
ROOT = Path(__file__).parent.parent.parent
CLI = (sys.executable, "-m", "specivod")


def retag(registry_url: str, repository: str, source: str, tag: str) -> None:
    request = urllib.request.Request(
        f"{registry_url}/v2/{repository}/manifests/{source}", headers={"Accept": MANIFEST_TYPES}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        manifest, media_type = answer.read(), answer.headers["Content-Type"]
    connection = RegistryConnection(registry_url)
    try:
        connection.put_manifest(repository, tag, manifest, media_type)
    finally:
        connection.close()


def get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        body: bytes = answer.read()
        return body


def status_of(base: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(get(f"{base}/api/v1/status"))
    return document


class Notifications:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET, read by a thread as
    systemd would read it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.settimeout(0.2)
        self.received: list[str] = []
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                self.received.append(self._socket.recv(4096).decode())
            except TimeoutError:
                continue

    def drain(self) -> list[str]:
        return list(self.received)

    def close(self) -> None:
        self._closed.set()
        self._reader.join()
        self._socket.close()


@pytest.fixture
def notifications(tmp_path: Path) -> Iterator[Notifications]:
    made = Notifications(tmp_path / "notify.sock")
    try:
        yield made
    finally:
        made.close()


def start_daemon(config: Path, notify: Notifications, log: Path) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
    environment.update(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="2000000")
    with log.open("wb") as stream:
        return subprocess.Popen(
            [sys.executable, "-m", "specivod", "--config", str(config), "-v", "run"],
            stdout=stream,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=ROOT,
        )


def start_prometheus(root: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = root / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"- job_name: specivod\n  static_configs: [{{targets: ['{target}']}}]\n"
    )
    with (root / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process, f"http://127.0.0.1:{port}"


def prometheus_value(base: str, query: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    document = json.loads(get(url))
    assert document["status"] == "success", document
    result: list[dict[str, Any]] = document["data"]["result"]
    return result


def answer_times_while_busy(base: str) -> list[float]:
    """Seconds each /healthz + /metrics pair took while the daemon's transaction ran."""
    latencies = []
    while status_of(base)["in_progress"]:
        started = time.monotonic()
        assert get(f"{base}/healthz") == b"ok\n"
        assert b"specivod_upgrade_state" in get(f"{base}/metrics")
        latencies.append(time.monotonic() - started)
    return latencies


def test_the_daemon_upgrades_to_a_release_pushed_after_it_started(
    stack: Stack,
    deployment: SandboxDeployment,
    tmp_path: Path,
    notifications: Notifications,
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    base = f"http://{listen}"
    config = specivod_config(
        deployment,
        tmp_path,
        registry={"image": deployment.images.app, "timeout": "10s", "poll_interval": "1s"},
        policy={"range": ">0.1.11 <=0.1.12", "prerelease": True, "expected_duration": "1s"},
        window=[
            {
                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                "start": "00:00",
                "end": "00:00",
                "timezone": "UTC",
            }
        ],
        http={"listen": listen},
    )
    config_path = write_config(tmp_path / "specivod.toml", config)
    daemon = start_daemon(config_path, notifications, tmp_path / "daemon.log")
    prometheus, prometheus_url = start_prometheus(tmp_path, listen)
    try:
        wait_for("READY=1", lambda: "READY=1" in notifications.drain(), 30)
        wait_for(
            "a first poll with nothing to do",
            lambda: status_of(base)["last_poll_result"] == "ok",
            30,
        )
        assert status_of(base)["daemon"]["target"] is None
        assert status_of(base)["deployed"] == BASELINE

        retag(stack.registry.url, deployment.images.app_path, "0.1.11", NEW)

        wait_for(
            "the daemon's upgrade to start",
            lambda: status_of(base)["in_progress"] is True,
            60,
        )
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
        busy = subprocess.Popen(
            [*CLI, "--config", str(config_path), "upgrade", "--now", "--to", "0.1.11"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
            cwd=ROOT,
        )
        latencies = answer_times_while_busy(base)
        _, busy_stderr = busy.communicate(timeout=120)
        assert busy.returncode == 1, busy_stderr
        assert "busy" in busy_stderr
        assert "upgrade (schedule)" in busy_stderr
        assert len(latencies) >= 10
        sys.stderr.write(
            f"/healthz+/metrics during the upgrade: {len(latencies)} pairs, "
            f"max {max(latencies) * 1000:.1f} ms\n"
        )
        assert max(latencies) < 1.0
        assert status_of(base)["deployed"] == NEW
        last = status_of(base)["transaction"]
        assert (last["trigger"], last["to"], last["state"]) == ("schedule", NEW, "succeeded")
        assert f"SPECIVO_VERSION={NEW}" in deployment.env_file.read_text()

        query = f'specivod_deployed_version_info{{version="{NEW}"}}'
        wait_for(
            "Prometheus to scrape the new version",
            lambda: [s["value"][1] for s in prometheus_value(prometheus_url, query)] == ["1"],
            60,
        )
        metrics = get(f"{base}/metrics")
        assert b'specivod_upgrades_total{result="succeeded"} 1.0' in metrics
        check = subprocess.run(
            ["promtool", "check", "metrics"], input=metrics, capture_output=True, check=False
        )
        assert check.returncode == 0, check.stdout + check.stderr

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
        received = notifications.drain()
        assert "WATCHDOG=1" in received
        assert received.index("READY=1") < received.index("STOPPING=1")
        assert any(message.startswith("STATUS=upgrade #") for message in received)
    finally:
        for process in (daemon, prometheus):
            if process.poll() is None:
                process.kill()
                process.wait()
        sys.stderr.write((tmp_path / "daemon.log").read_text()[-5000:])


def check_json(tmp_path: Path, image: str, min_age: str) -> dict[str, Any]:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / ".env").write_text(f"SPECIVO_VERSION={BASELINE}\n")
    config: dict[str, object] = {
        "registry": {"image": image, "timeout": "10s"},
        "policy": {"range": ">=0.1.0 <0.2.0", "min_age": min_age},
        "deployment": {"project_dir": str(project)},
        "state": {"dir": str(tmp_path / "state")},
        "backup": {"dir": str(tmp_path / "backups")},
    }
    path = write_config(tmp_path / "check.toml", config)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
    result = subprocess.run(
        [*CLI, "--config", str(path), "check", "--json"],
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


def test_min_age_counts_from_the_image_creation_time_read_from_the_registry(
    stack: Stack, tmp_path: Path
) -> None:
    image = f"{stack.registry.address}/{stack.images.app_path}"  # built by docker minutes ago

    held = check_json(tmp_path, image, "72h")
    assert "image created" in held["held"]["0.1.11"], held
    assert held["target"] is None

    old_enough = check_json(tmp_path, image, "1s")
    assert old_enough["held"] == {}
    assert old_enough["target"] == "0.1.11"


def test_min_age_without_a_creation_time_counts_from_the_first_sighting(
    stack: Stack, tmp_path: Path
) -> None:
    repository = "specivo-min-age/specivo"
    push_image(stack.registry.url, repository, "0.1.11")  # its config has no "created"
    image = f"{stack.registry.address}/{repository}"

    first = check_json(tmp_path, image, "2s")
    assert "first seen" in first["held"]["0.1.11"], first
    time.sleep(2.5)

    assert check_json(tmp_path, image, "2s")["target"] == "0.1.11"
