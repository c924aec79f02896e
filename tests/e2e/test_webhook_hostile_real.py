"""Hostile input to the real daemon's Alertmanager webhook, after an unattended upgrade that a
matching alert would roll back: no token, a wrong token, another scheme, malformed JSON, a wrong
schema, a wrong content type and a 10 MB body (with a length and chunked) each get a 4xx, roll
nothing back and leave /healthz and /metrics answering. The same alert sent properly then does
roll back, so every refused request really was a rollback attempt.
"""

from __future__ import annotations

import http.client
import json
import secrets
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from sandbox.releases import BASELINE
from tests.e2e.test_alertmanager_real import (
    TARGET,
    Daemon,
    kinds,
    notifications,
    upgraded_daemon,
)
from tests.e2e.test_daemon_real import get, status_of
from tests.support import alertmanager
from tests.support.waiting import wait_for

__all__ = ["notifications", "upgraded_daemon"]  # fixtures, imported so that pytest finds them

pytestmark = pytest.mark.stack

TEN_MB = 10 * 1024 * 1024


def payload(**extra_annotations: str) -> dict[str, Any]:
    """An Alertmanager v4 delivery of a firing SpecivoDown alert that started just now."""
    firing = alertmanager.alert(
        started=datetime.now(UTC),
        fingerprint=secrets.token_hex(8),
        labels={"alertname": "SpecivoDown", "severity": "critical"},
        annotations={"summary": "hostile test", **extra_annotations},
    )
    return alertmanager.delivery(firing)


def chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def post(
    daemon: Daemon, body: bytes, headers: dict[str, str], *, chunked: bool = False
) -> tuple[int, dict[str, Any]]:
    """POST to the webhook; a server that answers before reading a huge body may close the
    connection under the sender, so a failed send still reads the answer."""
    address = urllib.parse.urlsplit(daemon.base)
    connection = http.client.HTTPConnection(address.netloc, timeout=30)
    try:
        try:
            if chunked:
                connection.request(
                    "POST", "/api/v1/alertmanager", chunks(body), headers, encode_chunked=True
                )
            else:
                connection.request("POST", "/api/v1/alertmanager", body, headers)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = connection.getresponse()
        document: dict[str, Any] = json.loads(answer.read())
        return answer.status, document
    finally:
        connection.close()


def still_serving(daemon: Daemon) -> None:
    assert get(f"{daemon.base}/healthz") == b"ok\n"
    assert b"specivod_alertmanager_webhooks_total" in get(f"{daemon.base}/metrics")
    assert status_of(daemon.base)["deployed"] == TARGET
    assert daemon.process.poll() is None


def test_hostile_webhook_requests_get_4xx_and_roll_nothing_back(upgraded_daemon: Daemon) -> None:
    daemon = upgraded_daemon
    good = json.dumps(payload()).encode()
    bearer = {"Authorization": f"Bearer {daemon.token}", "Content-Type": "application/json"}
    json_only = {"Content-Type": "application/json"}
    huge = json.dumps(payload(padding="x" * TEN_MB)).encode()
    cases: list[tuple[str, bytes, dict[str, str], bool, int, str]] = [
        ("no token", good, json_only, False, 401, "unauthorized"),
        (
            "wrong token",
            good,
            {**json_only, "Authorization": f"Bearer {daemon.token}x"},
            False,
            401,
            "unauthorized",
        ),
        (
            "basic scheme",
            good,
            {**json_only, "Authorization": f"Basic {daemon.token}"},
            False,
            401,
            "unauthorized",
        ),
        ("malformed JSON", good[:-7], bearer, False, 400, "bad_request"),
        (
            "wrong schema",
            json.dumps({**payload(), "version": "3", "alerts": "SpecivoDown"}).encode(),
            bearer,
            False,
            400,
            "bad_request",
        ),
        (
            "not JSON",
            good,
            {**bearer, "Content-Type": "text/plain"},
            False,
            415,
            "unsupported_media_type",
        ),
        ("10 MB body", huge, bearer, False, 413, "too_large"),
        ("10 MB body, chunked", huge, bearer, True, 413, "too_large"),
    ]
    for name, body, headers, chunked, expected, result in cases:
        status, answer = post(daemon, body, headers, chunked=chunked)
        assert (status, answer["result"]) == (expected, result), (name, answer)
        still_serving(daemon)
    assert kinds(daemon.history()) == [("upgrade", "succeeded", TARGET)]
    refusals = {"unauthorized": 3, "bad_request": 2, "unsupported_media_type": 1, "too_large": 2}
    refused = ("unauthorized", "bad_request", "unsupported_media_type", "too_large", "accepted")

    def counted() -> dict[str, float]:
        counts = daemon.webhook_counts()
        return {name: counts[name] for name in refused if counts[name]}

    # /metrics is rendered at most once a second: the last answers show up within it.
    wait_for("every refusal counted", lambda: counted() == refusals, 5)

    # The control: the same alert, sent properly, is a rollback.
    status, answer = post(daemon, good, bearer)
    assert (status, answer["result"]) == (202, "accepted"), answer
    wait_for(
        "the rollback",
        lambda: (
            status_of(daemon.base)["deployed"] == BASELINE
            and not status_of(daemon.base)["in_progress"]
        ),
        180,
    )
    assert kinds(daemon.history())[0] == ("rollback", "rolled_back", BASELINE)
