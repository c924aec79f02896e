"""The registry client against a local misbehaving HTTP server: every fault is retried through the
RetryPolicy (waits recorded, not spent) and ends in a typed error naming registry and repository."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from pydantic import SecretStr

from specivod.adapters.registry import Credentials, RegistryClient
from specivod.domain.errors import (
    RegistryAuthError,
    RegistryNotFound,
    RegistryProtocolError,
    RegistryRateLimited,
    RegistryTimeout,
    RegistryUnavailable,
)
from specivod.domain.references import ImageReference
from specivod.retrying import RetryPolicy
from tests.support.local_http import Serve
from tests.support.ports import free_port

REPO = "specivo/specivo"
TAGS_PATH = f"/v2/{REPO}/tags/list"
TAGS = {"name": REPO, "tags": ["0.1.10", "0.1.11"]}


@dataclass
class FakeClock:
    wall: datetime = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    mono: float = 1000.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    async def sleep(self, seconds: float) -> None:
        self.mono += seconds


@dataclass
class Sleeps:
    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_client(
    domain: str,
    sleeps: Sleeps,
    *,
    attempts: int = 3,
    timeout: float = 5.0,
    clock: FakeClock | None = None,
    credentials: Credentials | None = None,
) -> RegistryClient:
    return RegistryClient(
        ImageReference(domain, REPO),
        retry=RetryPolicy(attempts=attempts, sleep=sleeps),
        timeout=timeout,
        clock=clock,
        credentials=credentials,
    )


def app_with(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def answers(*responses: Callable[[], web.StreamResponse]) -> web.Application:
    """A server that gives the responses in turn, then repeats the last one."""
    calls = iter(responses)
    last: list[Callable[[], web.StreamResponse]] = []

    async def handler(_request: web.Request) -> web.StreamResponse:
        factory = next(calls, None)
        if factory is not None:
            last[:] = [factory]
        return last[0]()

    return app_with(handler)


def ok() -> web.StreamResponse:
    return web.json_response(TAGS)


def status(code: int, **headers: str) -> Callable[[], web.StreamResponse]:
    return lambda: web.Response(status=code, headers=headers, text="busy")


async def test_503_then_success(serve: Serve, sleeps: Sleeps) -> None:
    domain = await serve(answers(status(503), ok))
    async with make_client(domain, sleeps) as client:
        assert await client.list_tags() == ["0.1.10", "0.1.11"]
        assert client.requests == 2
    assert len(sleeps.waits) == 1


async def test_5xx_every_time_is_unavailable_after_all_attempts(
    serve: Serve, sleeps: Sleeps
) -> None:
    domain = await serve(answers(status(502)))
    async with make_client(domain, sleeps, attempts=4) as client:
        with pytest.raises(RegistryUnavailable) as caught:
            await client.list_tags()
        assert client.requests == 4
    message = str(caught.value)
    assert domain in message
    assert REPO in message
    assert "502" in message
    assert "4 attempts" in message


async def test_429_waits_retry_after_seconds(serve: Serve, sleeps: Sleeps) -> None:
    domain = await serve(answers(status(429, **{"Retry-After": "7"}), ok))
    async with make_client(domain, sleeps) as client:
        assert await client.list_tags() == ["0.1.10", "0.1.11"]
    assert sleeps.waits == [7.0]


async def test_429_waits_until_retry_after_http_date(serve: Serve, sleeps: Sleeps) -> None:
    clock = FakeClock()
    later = (clock.wall + timedelta(seconds=9)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    domain = await serve(answers(status(429, **{"Retry-After": later}), ok))
    async with make_client(domain, sleeps, clock=clock) as client:
        assert await client.list_tags() == ["0.1.10", "0.1.11"]
    assert sleeps.waits == [9.0]


async def test_429_retry_after_in_the_past_retries_at_once(serve: Serve, sleeps: Sleeps) -> None:
    clock = FakeClock()
    earlier = (clock.wall - timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    domain = await serve(answers(status(429, **{"Retry-After": earlier}), ok))
    async with make_client(domain, sleeps, clock=clock) as client:
        await client.list_tags()
    assert sleeps.waits == [0.0]


async def test_429_that_persists_is_rate_limited(serve: Serve, sleeps: Sleeps) -> None:
    domain = await serve(answers(status(429, **{"Retry-After": "2"})))
    async with make_client(domain, sleeps, attempts=3) as client:
        with pytest.raises(RegistryRateLimited, match="429") as caught:
            await client.list_tags()
    assert sleeps.waits == [2.0, 2.0]
    assert domain in str(caught.value)


@pytest.mark.parametrize("code", [429, 503])
async def test_a_retry_after_longer_than_specivod_waits_is_not_retried(
    serve: Serve, sleeps: Sleeps, code: int
) -> None:
    domain = await serve(answers(status(code, **{"Retry-After": "3600"})))
    async with make_client(domain, sleeps, attempts=4) as client:
        with pytest.raises((RegistryRateLimited, RegistryUnavailable), match="3600"):
            await client.list_tags()
        assert client.requests == 1
    assert sleeps.waits == []


async def test_a_retry_after_as_long_as_the_longest_wait_is_waited(
    serve: Serve, sleeps: Sleeps
) -> None:
    domain = await serve(answers(status(429, **{"Retry-After": "30"}), ok))
    async with make_client(domain, sleeps, attempts=2) as client:
        await client.list_tags()
    assert sleeps.waits == [30.0]


async def test_503_with_retry_after_is_honoured_and_stays_unavailable(
    serve: Serve, sleeps: Sleeps
) -> None:
    domain = await serve(answers(status(503, **{"Retry-After": "3"})))
    async with make_client(domain, sleeps, attempts=2) as client:
        with pytest.raises(RegistryUnavailable, match="503"):
            await client.list_tags()
    assert sleeps.waits == [3.0]


async def test_a_hang_is_a_timeout_within_the_configured_limit(
    serve: Serve, sleeps: Sleeps
) -> None:
    async def hang(_request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    domain = await serve(app_with(hang))
    async with make_client(domain, sleeps, attempts=2, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(RegistryTimeout, match=r"0\.3s") as caught:
            await client.list_tags()
        elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 60  # two timeouts spent, not the hour the server hangs
    assert client.requests == 2
    assert domain in str(caught.value)


async def test_a_body_that_stalls_is_a_timeout(serve: Serve, sleeps: Sleeps) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'{"name": "specivo/specivo", "tags": [')
        await asyncio.sleep(3600)
        return response

    domain = await serve(app_with(stall))
    async with make_client(domain, sleeps, attempts=1, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(RegistryTimeout):
            await client.list_tags()
    assert time.monotonic() - started < 60  # the timeout, not the hour the body stalls


async def raw_server(replies: list[bytes]) -> tuple[str, asyncio.Server]:
    """A socket server that answers each connection with the next raw reply, then hangs up."""
    queue = iter(replies)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(next(queue, replies[-1]))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return f"127.0.0.1:{server.sockets[0].getsockname()[1]}", server


def http_reply(body: bytes, content_length: int | None = None) -> bytes:
    length = len(body) if content_length is None else content_length
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def test_body_shorter_than_content_length_is_a_protocol_error(sleeps: Sleeps) -> None:
    body = json.dumps(TAGS).encode()
    domain, server = await raw_server([http_reply(body[:20], content_length=len(body))])
    async with server, make_client(domain, sleeps, attempts=3) as client:
        with pytest.raises(RegistryProtocolError, match="cut short") as caught:
            await client.list_tags()
        assert client.requests == 3
    assert REPO in str(caught.value)


async def test_truncated_once_then_whole_succeeds(sleeps: Sleeps) -> None:
    body = json.dumps(TAGS).encode()
    domain, server = await raw_server(
        [http_reply(body[:20], content_length=len(body)), http_reply(body)]
    )
    async with server, make_client(domain, sleeps) as client:
        assert await client.list_tags() == ["0.1.10", "0.1.11"]
        assert client.requests == 2


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "specivo/specivo", "tags": ["0.1.10", ',
        b"<html>maintenance</html>",
        b'["0.1.10"]',
        b'{"name": "specivo/specivo", "tags": [1, 2]}',
        b'{"name": "specivo/specivo"}',
    ],
)
async def test_bad_json_is_a_protocol_error_without_retry(
    serve: Serve, sleeps: Sleeps, body: bytes
) -> None:
    domain = await serve(answers(lambda: web.Response(body=body)))
    async with make_client(domain, sleeps) as client:
        with pytest.raises(RegistryProtocolError, match="tag list") as caught:
            await client.list_tags()
        assert client.requests == 1
    assert domain in str(caught.value)


async def test_connection_refused_is_unavailable(sleeps: Sleeps) -> None:
    domain = f"127.0.0.1:{free_port()}"
    async with make_client(domain, sleeps, attempts=2) as client:
        with pytest.raises(RegistryUnavailable, match="cannot connect") as caught:
            await client.list_tags()
    assert len(sleeps.waits) == 1
    assert domain in str(caught.value)


async def test_unknown_repository_is_not_found(serve: Serve, sleeps: Sleeps) -> None:
    error = {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]}
    domain = await serve(answers(lambda: web.json_response(error, status=404)))
    async with make_client(domain, sleeps) as client:
        with pytest.raises(RegistryNotFound, match="NAME_UNKNOWN") as caught:
            await client.list_tags()
        assert client.requests == 1
    assert REPO in str(caught.value)


async def test_failures_never_show_the_password(serve: Serve, sleeps: Sleeps) -> None:
    domain = await serve(answers(status(401, **{"WWW-Authenticate": 'Basic realm="r"'})))
    credentials = Credentials(username="alice", password=SecretStr("hunter2-secret"))
    async with make_client(domain, sleeps, credentials=credentials) as client:
        with pytest.raises(RegistryAuthError) as caught:
            await client.list_tags()
    assert "hunter2-secret" not in str(caught.value)
    assert "hunter2-secret" not in repr(credentials)
    assert "alice" in str(caught.value)
