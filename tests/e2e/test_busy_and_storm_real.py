"""Hostile timing on the real daemon (issue 13, items 6 and 7).

Busy: while ``specivod run`` is in the middle of its own unattended upgrade (to a release that
takes ``SLOW_START`` seconds to get healthy), ``upgrade --now``, ``rollback``, ``backup`` and
``restore ID`` started by hand are each refused at once with "busy: another specivod operation
holds … (pid N: upgrade (schedule))" and exit 1, and nothing interleaves: the journal holds only
the daemon's transaction, ``.env`` differs only by the daemon's pin, the backup dir holds only the
backups taken before and the daemon's own, and the rows are unchanged.

Storm: after the daemon's unattended upgrade, 1,000 deliveries of one firing alert (one
Alertmanager v4 payload, the real bearer token) from 50 concurrent aiohttp clients roll back
exactly once; every delivery gets a 2xx, and ``/healthz`` and ``/metrics`` keep answering during
the storm (their latencies are printed). The clients run in a process of their own, so the
latencies measured here are the daemon's, not the clients' event loop.

The busy test's releases live in a repository of their own (``REPOSITORY``), so its tags change
no other test's candidates.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sandbox.config import specivod_config, write_config
from sandbox.deployment import COMPOSE_FILE, SandboxDeployment, create_deployment
from sandbox.images import ImageNames, push_releases
from sandbox.releases import BASELINE, Behaviour, Release
from specivod.engine.lock import host_lock
from tests.conftest import Specivod, Stack
from tests.e2e.test_alertmanager_real import TARGET, Daemon, kinds, upgraded_daemon
from tests.e2e.test_daemon_real import (
    ROOT,
    Notifications,
    get,
    notifications,
    start_daemon,
    status_of,
)
from tests.e2e.test_webhook_hostile_real import payload
from tests.support.ports import free_port
from tests.support.waiting import wait_for

__all__ = ["notifications", "upgraded_daemon"]  # fixtures, imported so that pytest finds them

pytestmark = pytest.mark.stack

REPOSITORY = "specivo-busy/specivo"
SLOW_START = 25
"""Seconds the busy test's target takes to get healthy: the daemon's VERIFYING lasts this long."""
SLOW_TARGET = "0.1.11"
BUSY_RELEASES = (
    Release(BASELINE, Behaviour.HEALTHY, 1),
    Release(SLOW_TARGET, Behaviour.SLOW, 1, start_delay=SLOW_START),
)
ALWAYS: list[object] = [
    {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "start": "00:00",
        "end": "00:00",
        "timezone": "UTC",
    }
]
REFUSED_WITHIN_SECONDS = 20.0
"""Each refused command's whole run, Python start included, five at once. About 1 s alone;
measured 7 to 10.6 s for five at once at a load average of 13 to 19 on 2 cores (CPU, not
waiting: 0.3 s of CPU each). That the daemon's transaction is still running when all five are
done is what shows none of them waited for it."""
DELIVERIES = 1000
CLIENTS = 50
MAX_PROBE_SECONDS = 3.0
"""The slowest /healthz + /metrics pair allowed during the storm (measured: 0.65 to 0.93 s at a
load average of 13 to 16 on 2 cores, the slow ones while the rollback starts)."""
ROLLBACKS = re.compile(rb"^specivod_rollbacks_total\{[^}]*\} (\S+)$", re.M)
WEBHOOKS = re.compile(rb'^specivod_alertmanager_webhooks_total\{result="(\w+)"\} (\S+)$', re.M)


@pytest.fixture(scope="module")
def busy_images(stack: Stack) -> ImageNames:
    names = ImageNames(stack.registry.address, app_path=REPOSITORY)
    push_releases(stack.engine.client, names, BUSY_RELEASES)
    return names


@pytest.fixture
def busy_deployment(busy_images: ImageNames, tmp_path: Path) -> Iterator[SandboxDeployment]:
    compose_file = COMPOSE_FILE.replace("/specivo/specivo:", f"/{REPOSITORY}:")
    assert compose_file != COMPOSE_FILE
    created = create_deployment(tmp_path, busy_images, compose_file=compose_file)
    try:
        yield created
    finally:
        created.down()


@dataclass(frozen=True)
class Refusal:
    command: tuple[str, ...]
    returncode: int
    stderr: str
    seconds: float


def run_all_at_once(commands: list[tuple[Specivod, tuple[str, ...]]]) -> list[Refusal]:
    """Start every command at the same moment; each one's exit code, stderr and duration."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "specivod", "--config", str(cli.config), *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
            cwd=ROOT,
        )
        for cli, command in commands
    ]
    ended: dict[int, float] = {}
    while len(ended) < len(processes):
        for index, process in enumerate(processes):
            if index not in ended and process.poll() is not None:
                ended[index] = time.monotonic() - started
        time.sleep(0.05)
    return [
        Refusal(command, process.returncode, process.communicate()[1], ended[index])
        for index, ((_, command), process) in enumerate(zip(commands, processes, strict=True))
    ]


def backup_ids(cli: Specivod) -> list[str]:
    listed = cli("backups", "--json", timeout=60)
    assert listed.returncode == 0, listed.stderr
    return sorted(manifest["id"] for manifest in json.loads(listed.stdout)["backups"])


def history(cli: Specivod) -> list[dict[str, Any]]:
    listed = cli("history", "--json", timeout=60)
    assert listed.returncode == 0, listed.stderr
    transactions: list[dict[str, Any]] = json.loads(listed.stdout)["transactions"]
    return transactions


def test_manual_commands_are_refused_busy_while_the_daemon_upgrades(
    busy_deployment: SandboxDeployment,
    busy_images: ImageNames,
    tmp_path: Path,
    notifications: Notifications,
) -> None:
    deployment = busy_deployment
    listen = f"127.0.0.1:{free_port()}"
    base = f"http://{listen}"
    policy: dict[str, object] = {"range": f">{BASELINE} <0.2.0", "expected_duration": "1s"}
    config = specivod_config(
        deployment,
        tmp_path,
        registry={"image": busy_images.app, "timeout": "10s", "poll_interval": "1s"},
        policy=policy,
        health={"retries": 2 * SLOW_START},
        window=ALWAYS,
        http={"listen": listen},
    )
    cli = Specivod(write_config(tmp_path / "specivod.toml", config))
    # The same deployment and state dir, its registry gone and a hold configured: the hold
    # needs the registry, and "busy" must still be the answer, not a registry error.
    dead = f"127.0.0.1:{free_port()}/{REPOSITORY}"
    dead_registry = {
        **config,
        "registry": {"image": dead, "timeout": "10s"},
        "policy": {**policy, "min_age": "1h"},
    }
    registry_gone = Specivod(write_config(tmp_path / "registry-gone.toml", dead_registry))
    manual = cli("backup")
    assert manual.returncode == 0, manual.stderr
    [manual_backup] = backup_ids(cli)
    env_before = deployment.env_file.read_bytes()
    rows_before = deployment.table_checksum()

    log = tmp_path / "daemon.log"
    daemon = start_daemon(cli.config, notifications, log)
    try:
        wait_for("READY=1", lambda: "READY=1" in notifications.drain(), 30)
        wait_for("the daemon's upgrade to start", lambda: status_of(base)["in_progress"], 60)
        refusals = run_all_at_once(
            [
                (cli, ("upgrade", "--now")),
                (cli, ("rollback",)),
                (cli, ("backup",)),
                (cli, ("restore", manual_backup)),
                (registry_gone, ("upgrade", "--now")),
            ]
        )
        mid_transaction = status_of(base)
        for refusal in refusals:
            sys.stderr.write(f"{' '.join(refusal.command)}: refused in {refusal.seconds:.2f} s\n")
        assert mid_transaction["in_progress"], "the daemon's upgrade ended before the refusals"
        assert mid_transaction["transaction"]["trigger"] == "schedule"
        for refusal in refusals:
            assert refusal.returncode == 1, refusal
            assert "busy: another specivod operation holds" in refusal.stderr, refusal
            assert "upgrade (schedule)" in refusal.stderr, refusal
            assert refusal.seconds < REFUSED_WITHIN_SECONDS, refusal

        wait_for("the daemon's upgrade to end", lambda: not status_of(base)["in_progress"], 120)
        [upgrade] = history(cli)
        assert (upgrade["kind"], upgrade["trigger"], upgrade["state"], upgrade["to"]) == (
            "upgrade",
            "schedule",
            "succeeded",
            SLOW_TARGET,
        ), upgrade
        assert deployment.env_file.read_bytes() == env_before.replace(
            f"SPECIVO_VERSION={BASELINE}\n".encode(), f"SPECIVO_VERSION={SLOW_TARGET}\n".encode()
        )
        assert backup_ids(cli) == sorted([manual_backup, upgrade["backup_id"]])
        assert deployment.table_checksum() == rows_before
        assert deployment.running_version() == SLOW_TARGET
        assert daemon.poll() is None
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        sys.stderr.write(log.read_text()[-4000:])


def test_a_state_dir_that_cannot_be_locked_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_text(f"SPECIVO_VERSION={BASELINE}\n")
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    config: dict[str, object] = {
        "registry": {"image": f"127.0.0.1:{free_port()}/{REPOSITORY}"},
        "deployment": {"project_dir": str(project)},
        "state": {"dir": str(not_a_directory / "state")},
        "backup": {"dir": str(tmp_path / "backups")},
    }
    cli = Specivod(write_config(tmp_path / "specivod.toml", config))
    for command in (("backup",), ("rollback",), ("upgrade", "--now"), ("restore", "X")):
        result = cli(*command, timeout=60)
        assert result.returncode == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr, (command, result.stderr)
        assert f"cannot take the lock {not_a_directory / 'state'}" in result.stderr, result.stderr


async def _deliver(url: str, body: bytes, headers: dict[str, str], count: int) -> list[Any]:
    answers = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for _ in range(count):
            started = time.monotonic()
            async with session.post(url, data=body, headers=headers) as answer:
                document = await answer.json()
                answers.append((answer.status, document["result"], time.monotonic() - started))
    return answers


async def _storm(url: str, body: bytes, headers: dict[str, str]) -> list[Any]:
    each = DELIVERIES // CLIENTS
    batches = await asyncio.gather(*(_deliver(url, body, headers, each) for _ in range(CLIENTS)))
    return [answer for batch in batches for answer in batch]


def storm(url: str, body: bytes, headers: dict[str, str]) -> list[Any]:
    """(status, result, seconds) of every delivery; run in a process of its own."""
    return asyncio.run(_storm(url, body, headers))


def webhook_counts(base: str) -> dict[str, float]:
    metrics = get(f"{base}/metrics")
    return {name.decode(): float(value) for name, value in WEBHOOKS.findall(metrics)}


def test_a_storm_of_one_firing_alert_rolls_back_once(upgraded_daemon: Daemon) -> None:
    daemon = upgraded_daemon
    body = json.dumps(payload()).encode()
    headers = {"Authorization": f"Bearer {daemon.token}", "Content-Type": "application/json"}
    probes: list[float] = []
    probed_at: list[datetime] = []
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as clients:
        storming = clients.submit(storm, daemon.webhook, body, headers)
        while not storming.done():
            started = time.monotonic()
            assert get(f"{daemon.base}/healthz") == b"ok\n"
            assert b"specivod_upgrade_state" in get(f"{daemon.base}/metrics")
            probes.append(time.monotonic() - started)
            probed_at.append(datetime.now(UTC))
        answers = storming.result()

    latencies = sorted(seconds for _, _, seconds in answers)
    sys.stderr.write(
        f"storm: {len(answers)} deliveries, {CLIENTS} clients; delivery latency median "
        f"{statistics.median(latencies) * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms; "
        f"/healthz+/metrics during it: {len(probes)} pairs, median "
        f"{statistics.median(probes) * 1000:.1f} ms, max {max(probes) * 1000:.1f} ms; slowest "
        + ", ".join(
            f"{seconds * 1000:.0f} ms ending {at:%H:%M:%S.%f}"
            for seconds, at in sorted(zip(probes, probed_at, strict=True))[-3:]
        )
        + "\n"
    )
    assert len(answers) == DELIVERIES
    assert all(200 <= status < 300 for status, _, _ in answers), answers
    results = [result for _, result, _ in answers]
    assert results.count("accepted") == 1, sorted(set(results))
    assert set(results) <= {"accepted", "duplicate", "ignored"}
    assert len(probes) >= 5
    assert max(probes) < MAX_PROBE_SECONDS

    wait_for(
        "the rollback",
        lambda: (
            status_of(daemon.base)["deployed"] == BASELINE
            and not status_of(daemon.base)["in_progress"]
        ),
        120,
    )
    rollback = daemon.history()[0]
    sys.stderr.write(f"rollback steps: {rollback.get('steps')} started {rollback['started_at']}\n")
    assert kinds(daemon.history()) == [
        ("rollback", "rolled_back", BASELINE),
        ("upgrade", "succeeded", TARGET),
    ]
    metrics = get(f"{daemon.base}/metrics")
    assert sum(float(value) for value in ROLLBACKS.findall(metrics)) == 1
    wait_for("every delivery counted", lambda: sum(webhook_counts(daemon.base).values()) >= 1000, 5)
    counts = webhook_counts(daemon.base)
    assert counts["accepted"] == 1
    assert counts["duplicate"] + counts["ignored"] == DELIVERIES - 1, counts
    assert daemon.process.poll() is None


def post_alert(daemon: Daemon, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(
        daemon.webhook,
        data=body,
        headers={"Authorization": f"Bearer {daemon.token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        result: str = json.loads(answer.read())["result"]
        return answer.status, result


def test_an_alert_that_arrives_while_a_command_holds_the_lock_rolls_back_after_it(
    upgraded_daemon: Daemon, tmp_path: Path
) -> None:
    """Alertmanager repeats an alert only after its ``repeat_interval`` (4 h by default): an
    accepted alert must roll back once the operation in its way (here a long manual command,
    the host lock held by this test) has ended, without waiting for a repeat."""
    daemon = upgraded_daemon
    with host_lock(tmp_path / "state", "backup (a long manual one)"):
        assert post_alert(daemon, json.dumps(payload()).encode()) == (202, "accepted")
        time.sleep(3)
        assert kinds(daemon.history()) == [("upgrade", "succeeded", TARGET)]
    wait_for(
        "the rollback, once the lock is free",
        lambda: kinds(daemon.history())[0] == ("rollback", "rolled_back", BASELINE),
        90,
    )
    assert kinds(daemon.history()) == [
        ("rollback", "rolled_back", BASELINE),
        ("upgrade", "succeeded", TARGET),
    ]
