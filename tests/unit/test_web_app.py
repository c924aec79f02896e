"""The web app through aiohttp's test client: auth, limits and schema of the webhook answered with a
4xx and no rollback; matching alerts roll back once, in the background; every outcome counted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from specivod.domain.alerts import parse_matcher_lines
from specivod.domain.errors import LockedError
from specivod.web.app import (
    ROLLBACK_TASKS,
    WEBHOOK_COUNTS,
    WebhookSettings,
    listen_address,
    make_app,
    serve,
)
from specivod.web.webhook import LastUpgrade, RollbackRequest
from tests.unit.test_webhook import NOW, UPGRADE, UPGRADE_STARTED, alert, payload

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
URL = "/api/v1/alertmanager"
SETTINGS = WebhookSettings(
    token=TOKEN,
    matchers=parse_matcher_lines(['alertname="SpecivoDown"', 'severity=~"critical|page"']),
    watch_period=timedelta(hours=2),
)


class Rollbacks:
    """The injected rollback starter: records requests; can be made to wait or to fail."""

    def __init__(self) -> None:
        self.requests: list[RollbackRequest] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail = False
        self.busy = 0

    async def __call__(self, request: RollbackRequest) -> None:
        self.requests.append(request)
        await self.release.wait()
        if self.busy:
            self.busy -= 1
            raise LockedError("another specivod operation holds the lock (pid 7: backup)")
        if self.fail:
            raise RuntimeError("journal unreadable")


ClientFactory = Callable[..., Awaitable[TestClient[aiohttp.web.Request, aiohttp.web.Application]]]


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    clients: list[TestClient[aiohttp.web.Request, aiohttp.web.Application]] = []

    async def build(
        *,
        rollbacks: Rollbacks | None = None,
        settings: WebhookSettings = SETTINGS,
        last: Callable[[], Any] = lambda: UPGRADE,
        now: datetime = NOW,
        **extra: Any,
    ) -> TestClient[aiohttp.web.Request, aiohttp.web.Application]:
        app = make_app(
            webhook=settings,
            render_metrics=extra.pop("render_metrics", lambda: b"specivod_up 1\n"),
            status=extra.pop("status", lambda: {"state": "idle"}),
            last_upgrade=last,
            start_rollback=rollbacks if rollbacks is not None else Rollbacks(),
            now=lambda: now,
            **extra,
        )
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.close()


async def post(
    client: TestClient[aiohttp.web.Request, aiohttp.web.Application],
    body: Mapping[str, Any] | bytes,
    headers: Mapping[str, str] = AUTH,
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post(
        URL, data=data, headers={"Content-Type": "application/json", **headers}
    )
    answer = await response.json()
    return response.status, answer


async def settle(client: TestClient[aiohttp.web.Request, aiohttp.web.Application]) -> None:
    tasks = client.app[ROLLBACK_TASKS] if client.app is not None else set()
    await asyncio.gather(*tasks)


def counts(client: TestClient[aiohttp.web.Request, aiohttp.web.Application]) -> dict[str, int]:
    assert client.app is not None
    return {k: v for k, v in client.app[WEBHOOK_COUNTS].items() if v}


async def test_healthz_metrics_and_status(make_client: ClientFactory) -> None:
    async def status() -> dict[str, Any]:
        return {"state": "verifying", "since": datetime(2026, 11, 26, tzinfo=UTC)}

    client = await make_client(status=status)
    health = await client.get("/healthz")
    assert (health.status, await health.text()) == (200, "ok\n")
    metrics = await client.get("/metrics")
    assert metrics.status == 200
    assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert await metrics.read() == b"specivod_up 1\n"
    answer = await client.get("/api/v1/status")
    assert await answer.json() == {"state": "verifying", "since": "2026-11-26 00:00:00+00:00"}


async def test_healthz_says_when_the_daemon_is_not_alive(make_client: ClientFactory) -> None:
    client = await make_client(alive=lambda: False)
    assert (await client.get("/healthz")).status == 503


async def test_an_async_metrics_renderer_is_awaited(make_client: ClientFactory) -> None:
    async def render() -> bytes:
        return b"specivod_async 1\n"

    client = await make_client(render_metrics=render)
    assert await (await client.get("/metrics")).read() == b"specivod_async 1\n"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "bearer token required"),
        ({"Authorization": "Bearer "}, "bearer token required"),
        ({"Authorization": f"Basic {TOKEN}"}, "bearer token required"),
        ({"Authorization": "Bearer wrong"}, "wrong bearer token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "wrong bearer token"),
        ({"Authorization": "Bearer t\u00f6ken"}, "wrong bearer token"),
    ],
)
async def test_without_the_right_token_nothing_happens(
    make_client: ClientFactory, headers: dict[str, str], reason: str
) -> None:
    rollbacks = Rollbacks()
    client = await make_client(rollbacks=rollbacks)
    status, answer = await post(client, payload(alert()), headers)
    assert (status, answer["reason"]) == (401, reason)
    response = await client.post(URL, json=payload(alert()), headers=headers)
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="specivod"')
    await settle(client)
    assert rollbacks.requests == []
    assert counts(client) == {"unauthorized": 2}


async def test_the_scheme_is_case_insensitive(make_client: ClientFactory) -> None:
    client = await make_client()
    status, _ = await post(client, payload(alert()), {"Authorization": f"bearer {TOKEN}"})
    assert status == 202


async def test_no_token_configured_disables_the_webhook(make_client: ClientFactory) -> None:
    rollbacks = Rollbacks()
    settings = WebhookSettings(None, SETTINGS.matchers, SETTINGS.watch_period)
    client = await make_client(rollbacks=rollbacks, settings=settings)
    status, answer = await post(client, payload(alert()))
    assert (status, answer["result"]) == (403, "disabled")
    assert rollbacks.requests == []


@pytest.mark.parametrize(
    ("body", "content_type", "expected", "reason"),
    [
        (b"{not json", "application/json", 400, "malformed JSON"),
        (b"\xff\xfe", "application/json", 400, "malformed JSON"),
        (b"[" * 100_000, "application/json", 400, "malformed JSON"),
        (b"[]", "application/json", 400, "not an Alertmanager v4 payload"),
        (json.dumps(payload(alert(), version="3")).encode(), "application/json", 400, "version"),
        (
            json.dumps(payload({**alert(), "startsAt": "soon"})).encode(),
            "application/json",
            400,
            "alerts.0.startsAt",
        ),
        (json.dumps(payload(alert())).encode(), "text/plain", 415, "not application/json"),
        (json.dumps(payload(alert())).encode(), "application/x-www-form-urlencoded", 415, "json"),
    ],
)
async def test_bad_input_is_a_4xx_and_rolls_nothing_back(
    make_client: ClientFactory, body: bytes, content_type: str, expected: int, reason: str
) -> None:
    rollbacks = Rollbacks()
    client = await make_client(rollbacks=rollbacks)
    response = await client.post(URL, data=body, headers={**AUTH, "Content-Type": content_type})
    answer = await response.json()
    assert response.status == expected
    assert reason in answer["reason"]
    await settle(client)
    assert rollbacks.requests == []
    assert (await client.get("/healthz")).status == 200


async def test_a_10_mb_body_is_refused(make_client: ClientFactory) -> None:
    rollbacks = Rollbacks()
    client = await make_client(rollbacks=rollbacks)
    big = json.dumps(payload(alert(), padding="x" * 10_000_000)).encode()
    status, answer = await post(client, big)
    assert (status, answer["result"]) == (413, "too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 1 << 16):
            yield big[start : start + (1 << 16)]

    response = await client.post(
        URL, data=chunks(), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status == 413
    status, _ = await post(client, big, headers={})
    assert status == 401
    await settle(client)
    assert rollbacks.requests == []
    assert counts(client) == {"too_large": 2, "unauthorized": 1}


async def test_a_matching_alert_rolls_back_once_in_the_background(
    make_client: ClientFactory,
) -> None:
    rollbacks = Rollbacks()
    rollbacks.release.clear()
    client = await make_client(rollbacks=rollbacks)
    status, answer = await post(client, payload(alert()))
    assert (status, answer["result"]) == (202, "accepted")
    assert "SpecivoDown" in answer["reason"]
    await asyncio.sleep(0)
    assert len(rollbacks.requests) == 1
    assert client.app is not None
    assert len(client.app[ROLLBACK_TASKS]) == 1
    rollbacks.release.set()
    await settle(client)
    assert rollbacks.requests[0].alert_names == ("SpecivoDown",)
    assert rollbacks.requests[0].upgrade == UPGRADE


async def test_twenty_repeated_deliveries_roll_back_once(make_client: ClientFactory) -> None:
    rollbacks = Rollbacks()
    client = await make_client(rollbacks=rollbacks)
    answers = await asyncio.gather(*(post(client, payload(alert())) for _ in range(20)))
    await settle(client)
    assert sorted(status for status, _ in answers) == [200] * 19 + [202]
    assert len(rollbacks.requests) == 1
    assert counts(client) == {"accepted": 1, "duplicate": 19}


@pytest.mark.parametrize(
    "body",
    [
        payload(alert(status="resolved")),
        payload(alert(name="DiskFull")),
        payload(alert(starts_at=UPGRADE_STARTED - timedelta(minutes=5))),
    ],
    ids=["resolved", "not-matching", "started-before-the-upgrade"],
)
async def test_ignored_alerts_are_acknowledged(
    make_client: ClientFactory, body: dict[str, Any]
) -> None:
    rollbacks = Rollbacks()
    client = await make_client(rollbacks=rollbacks)
    status, answer = await post(client, body)
    await settle(client)
    assert (status, answer["result"]) == (200, "ignored")
    assert rollbacks.requests == []


async def test_out_of_period_is_acknowledged_and_ignored(make_client: ClientFactory) -> None:
    rollbacks = Rollbacks()
    client = await make_client(rollbacks=rollbacks, now=UPGRADE.finished_at + timedelta(hours=3))
    status, answer = await post(client, payload(alert()))
    assert (status, answer["result"]) == (200, "ignored")
    assert rollbacks.requests == []


async def test_an_async_last_upgrade_provider_is_awaited(make_client: ClientFactory) -> None:
    async def last() -> LastUpgrade | None:
        return None

    client = await make_client(last=last)
    status, answer = await post(client, payload(alert()))
    assert (status, answer["reason"]) == (200, "no successful upgrade to roll back")


async def test_an_internal_failure_asks_alertmanager_to_retry(make_client: ClientFactory) -> None:
    def broken() -> LastUpgrade:
        raise OSError("journal unreadable")

    client = await make_client(last=broken)
    status, answer = await post(client, payload(alert()))
    assert (status, answer["result"]) == (503, "error")


async def test_a_rollback_that_fails_to_start_can_be_retried(make_client: ClientFactory) -> None:
    rollbacks = Rollbacks()
    rollbacks.fail = True
    client = await make_client(rollbacks=rollbacks)
    assert (await post(client, payload(alert())))[0] == 202
    await settle(client)
    rollbacks.fail = False
    assert (await post(client, payload(alert())))[0] == 202
    await settle(client)
    assert len(rollbacks.requests) == 2


async def test_an_accepted_rollback_waits_for_the_host_lock_then_runs(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    rollbacks = Rollbacks()
    rollbacks.busy = 2
    client = await make_client(rollbacks=rollbacks, busy_retry_seconds=0.01)
    assert (await post(client, payload(alert())))[0] == 202
    await settle(client)
    assert len(rollbacks.requests) == 3, "tried while busy twice, then ran"
    assert rollbacks.busy == 0
    assert sum("waits" in record.getMessage() for record in caplog.records) == 1
    assert (await post(client, payload(alert())))[1]["result"] == "duplicate"


async def test_a_rollback_still_waiting_for_the_lock_is_dropped_at_shutdown(
    make_client: ClientFactory,
) -> None:
    rollbacks = Rollbacks()
    rollbacks.busy = 1_000_000
    client = await make_client(rollbacks=rollbacks, busy_retry_seconds=3600)
    assert (await post(client, payload(alert())))[0] == 202
    await asyncio.sleep(0.05)
    assert len(rollbacks.requests) == 1
    await asyncio.wait_for(client.close(), 30)
    assert len(rollbacks.requests) == 1


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:9717", ("127.0.0.1", 9717)), ("[::1]:80", ("::1", 80))],
)
def test_listen_address(listen: str, expected: tuple[str, int]) -> None:
    assert listen_address(listen) == expected


async def test_serve_listens_on_loopback() -> None:
    app = make_app(
        webhook=SETTINGS,
        render_metrics=lambda: b"",
        status=lambda: {},
        last_upgrade=lambda: None,
        start_rollback=Rollbacks(),
        now=lambda: NOW,
    )
    runner = await serve(app, "127.0.0.1:0")
    try:
        host, port = runner.addresses[0][:2]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{host}:{port}/healthz") as response,
        ):
            assert response.status == 200
    finally:
        await runner.cleanup()
