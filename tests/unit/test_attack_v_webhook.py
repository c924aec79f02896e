"""Attack review V (today's webhook fix: an accepted rollback that finds the host lock held waits
and retries every 2 s): what it rolls back once the lock frees. Fixed: a waiting rollback is
dropped when all its alerts resolved, or when the watch period ended, while it waited.

The app is built with ``make_app`` and a hand-written rollback starter that raises
``LockedError`` while a manual command "holds the lock" and records the rollbacks that ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from specivod.domain.errors import LockedError
from specivod.web.app import make_app
from specivod.web.webhook import RollbackRequest
from tests.unit.test_web_app import SETTINGS, post, settle
from tests.unit.test_webhook import NOW, UPGRADE, alert, payload

Client = TestClient[aiohttp.web.Request, aiohttp.web.Application]


class HeldLock:
    """The rollback starter: refused while ``held`` (a manual command runs), else it runs."""

    def __init__(self) -> None:
        self.held = True
        self.tries = 0
        self.tried = asyncio.Event()
        self.ran: list[RollbackRequest] = []

    async def __call__(self, request: RollbackRequest) -> None:
        self.tries += 1
        self.tried.set()
        if self.held:
            raise LockedError("another specivod operation holds the lock (pid 7: backup)")
        self.ran.append(request)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def app_parts() -> AsyncIterator[tuple[Client, HeldLock, Clock]]:
    lock, clock = HeldLock(), Clock(NOW)
    app = make_app(
        webhook=SETTINGS,
        render_metrics=lambda: b"",
        status=lambda: {"state": "idle"},
        last_upgrade=lambda: UPGRADE,
        start_rollback=lock,
        now=clock,
        busy_retry_seconds=0.01,
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, lock, clock
    await client.close()


async def _until_tried(lock: HeldLock, tries: int) -> None:
    async with asyncio.timeout(10):
        while lock.tries < tries:
            lock.tried.clear()
            await lock.tried.wait()


async def test_an_alert_that_resolved_while_its_rollback_waited_rolls_nothing_back(
    app_parts: tuple[Client, HeldLock, Clock],
) -> None:
    client, lock, _ = app_parts
    assert (await post(client, payload(alert())))[0] == 202
    await _until_tried(lock, 2)  # waiting: a manual `specivod backup` holds the lock

    # The outage was a blip: Alertmanager sends the same alert resolved.
    resolved = alert(status="resolved")
    answer = await post(client, payload(resolved, status="resolved"))
    assert answer[0] == 200

    lock.held = False  # the manual command ends
    await settle(client)

    assert lock.ran == [], (
        "rolled back (a restore: rows since the upgrade replaced) a healthy release"
    )


async def test_a_rollback_that_waited_past_the_watch_period_does_not_run(
    app_parts: tuple[Client, HeldLock, Clock],
) -> None:
    client, lock, clock = app_parts
    assert (await post(client, payload(alert())))[0] == 202
    await _until_tried(lock, 2)

    # A manual restore or a long backup holds the lock for hours; the watch period ends.
    clock.now = UPGRADE.finished_at + SETTINGS.watch_period + timedelta(hours=3)
    fresh = await post(client, payload(alert(fingerprint="f2")))
    assert fresh[1]["result"] == "ignored", "the webhook itself refuses alerts this late"

    lock.held = False
    await settle(client)

    assert lock.ran == [], "an alert from hours ago rolled back a release that served since"
