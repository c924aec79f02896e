"""Fuzzed requests against the daemon's real aiohttp app (hand-written fakes behind it): any
method, path, header, content type or body is answered without a 5xx and without a crash, and
never starts a rollback unless the payload is one the pure ``decide`` accepts; a bad webhook gets
a 4xx and changes nothing (no rollback, no remembered alert)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from specivod.web.app import ROLLBACK_TASKS, SEEN_ALERTS, make_app
from specivod.web.webhook import Outcome, SeenAlerts, WebhookPayload, decide
from tests.unit.test_web_app import AUTH, SETTINGS, TOKEN, URL, Rollbacks
from tests.unit.test_webhook import NOW, UPGRADE, alert, payload

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PATHS = ["/metrics", "/healthz", "/api/v1/status", URL, "/", "/api/v1/alertmanager/", "/x"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
# Header text a client can send: visible ASCII and latin-1, no control characters.
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=60,
)
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/vnd.alertmanager+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
            ";;;",
            "application/json; charset=nonsense",
            "application/json; charset=utf-16",
        ]
    ),
    HEADER_TEXT,
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
BODIES = st.one_of(st.binary(max_size=300), JSON.map(lambda v: json.dumps(v).encode()))


@st.composite
def request_headers(draw: st.DrawFn) -> dict[str, str]:
    names = st.from_regex(r"X-[A-Za-z]{1,8}", fullmatch=True)
    headers = draw(st.dictionaries(names, HEADER_TEXT, max_size=3))
    headers["Content-Type"] = draw(CONTENT_TYPES)
    authorization = draw(st.one_of(st.none(), HEADER_TEXT, st.just(f"Bearer {TOKEN}")))
    if authorization is not None:
        headers["Authorization"] = authorization
    return headers


Exchange = Callable[[TestClient[Any, Any]], Awaitable[None]]


def run_against_app(exchange: Exchange) -> Rollbacks:
    """Build the real app, start it on 127.0.0.1, run ``exchange``, let rollbacks settle."""
    rollbacks = Rollbacks()

    async def scenario() -> None:
        app = make_app(
            webhook=SETTINGS,
            render_metrics=lambda: b"specivod_up 1\n",
            status=lambda: {"state": "idle"},
            last_upgrade=lambda: UPGRADE,
            start_rollback=rollbacks,
            now=lambda: NOW,
        )
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        try:
            await exchange(client)
            await asyncio.gather(*app[ROLLBACK_TASKS])
            rollbacks.seen = len(app[SEEN_ALERTS])  # type: ignore[attr-defined]
        finally:
            await client.close()

    asyncio.run(scenario())
    return rollbacks


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
    headers=request_headers(),
    body=BODIES,
)
def test_any_request_to_any_endpoint_is_never_a_5xx_nor_a_rollback(
    method: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    statuses: list[int] = []

    async def exchange(client: TestClient[Any, Any]) -> None:
        response = await client.request(method, path, data=body, headers=headers)
        await response.read()
        statuses.append(response.status)

    rollbacks = run_against_app(exchange)
    assert statuses and statuses[0] < 500
    assert rollbacks.requests == []


@FUZZ
@given(
    authorization=st.one_of(
        st.none(),
        HEADER_TEXT,
        HEADER_TEXT.map(lambda t: f"Bearer {t}"),
        st.just(f"Bearer {TOKEN}x"),
        st.just(f"Basic {TOKEN}"),
        st.just(f"Bearer {TOKEN[:-1]}"),
    ),
)
def test_a_wrong_token_is_401_even_with_a_payload_that_would_roll_back(
    authorization: str | None,
) -> None:
    """The payload is one that rolls back with the right token; any other token must not."""
    statuses: list[int] = []
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    if authorization is not None and authorization.partition(" ")[2].strip() == TOKEN:
        headers["Authorization"] = "Bearer not-the-token"

    async def exchange(client: TestClient[Any, Any]) -> None:
        response = await client.post(URL, data=json.dumps(payload(alert())), headers=headers)
        statuses.append(response.status)
        assert (await response.json())["result"] == Outcome.UNAUTHORIZED.value

    rollbacks = run_against_app(exchange)
    assert statuses == [401]
    assert rollbacks.requests == []
    assert rollbacks.seen == 0  # type: ignore[attr-defined]


FIELDS = ["version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "alerts"]
ALERT_FIELDS = ["status", "labels", "startsAt", "endsAt", "fingerprint", "annotations"]


@st.composite
def mutated_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A delivery that would roll back, with fields replaced by arbitrary JSON or removed."""
    body = payload(alert())
    for _ in range(draw(st.integers(1, 3))):
        alerts = body.get("alerts")
        first = alerts[0] if isinstance(alerts, list) and alerts else None
        if draw(st.booleans()) or not isinstance(first, dict):
            target, key = body, draw(st.sampled_from(FIELDS))
        else:
            target, key = first, draw(st.sampled_from(ALERT_FIELDS))
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(JSON)
    return body


@FUZZ
@given(body=mutated_payloads(), content_type=st.sampled_from(["application/json", "a/b+json"]))
def test_mutated_payloads_get_what_decide_says_and_invalid_ones_a_400_and_no_change(
    body: dict[str, Any], content_type: str
) -> None:
    try:
        parsed = WebhookPayload.model_validate(body)
    except ValidationError:
        expected = None
    else:
        expected = decide(
            parsed,
            matchers=SETTINGS.matchers,
            watch_period=SETTINGS.watch_period,
            last_upgrade=UPGRADE,
            now=NOW,
            seen=SeenAlerts(),
        )
    statuses: list[int] = []

    async def exchange(client: TestClient[Any, Any]) -> None:
        response = await client.post(
            URL, data=json.dumps(body), headers={**AUTH, "Content-Type": content_type}
        )
        statuses.append(response.status)
        await response.read()

    rollbacks = run_against_app(exchange)
    if expected is None:
        assert statuses == [400]
        assert rollbacks.requests == []
        assert rollbacks.seen == 0  # type: ignore[attr-defined]
    elif expected.request is None:
        assert statuses == [200]
        assert rollbacks.requests == []
    else:
        assert statuses == [202]
        assert len(rollbacks.requests) == 1


@settings(max_examples=30, deadline=None)
@given(depth=st.integers(1, 200_000), opener=st.sampled_from(["[", '{"a":']))
def test_deeply_nested_or_oversized_json_is_a_4xx(depth: int, opener: str) -> None:
    statuses: list[int] = []
    body = (opener * depth).encode()

    async def exchange(client: TestClient[Any, Any]) -> None:
        response = await client.post(
            URL, data=body, headers={**AUTH, "Content-Type": "application/json"}
        )
        statuses.append(response.status)
        await response.read()

    rollbacks = run_against_app(exchange)
    assert statuses[0] in (400, 413)
    assert rollbacks.requests == []
