"""Durations as operators write them, and image references as Docker normalises them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from specivod.domain.durations import format_duration, parse_duration
from specivod.domain.references import parse_reference


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("6h", timedelta(hours=6)),
        ("1h30m", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("2d", timedelta(days=2)),
        (15, timedelta(seconds=15)),
        ("1.5s", timedelta(seconds=1.5)),
        ("30", timedelta(seconds=30)),
    ],
)
def test_durations_parse(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "6x", "h", "1h 30", "-5s", "5s30"])
def test_bad_durations_are_named(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("90s", "1m30s"),
        ("6h", "6h"),
        ("1h30m", "1h30m"),
        ("250ms", "250ms"),
        ("0s", "0s"),
        ("1d2h3m4s", "1d2h3m4s"),
    ],
)
def test_durations_are_shown_the_short_way_and_read_back(text: str, shown: str) -> None:
    assert format_duration(parse_duration(text)) == shown
    assert parse_duration(shown) == parse_duration(text)


@pytest.mark.parametrize(
    ("text", "domain", "path", "api_host"),
    [
        ("specivo/specivo", "docker.io", "specivo/specivo", "registry-1.docker.io"),
        ("ubuntu", "docker.io", "library/ubuntu", "registry-1.docker.io"),
        ("index.docker.io/specivo/specivo", "docker.io", "specivo/specivo", "registry-1.docker.io"),
        ("127.0.0.1:5000/specivo/specivo", "127.0.0.1:5000", "specivo/specivo", "127.0.0.1:5000"),
        ("localhost/specivo", "localhost", "specivo", "localhost"),
        ("ghcr.io/org/team/app", "ghcr.io", "org/team/app", "ghcr.io"),
    ],
)
def test_references_normalise_like_docker(text: str, domain: str, path: str, api_host: str) -> None:
    reference = parse_reference(text)
    assert (reference.domain, reference.path, reference.api_host) == (domain, path, api_host)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("specivo/specivo:0.1.10", "carries a tag"),
        ("Specivo/App", "lowercase"),
        ("ghcr.io/a@sha256:abc", "digest"),
        ("", "empty"),
    ],
)
def test_bad_references_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_reference(text)


def test_loopback_detection() -> None:
    assert parse_reference("127.0.0.1:5000/a").is_loopback
    assert parse_reference("localhost:5000/a").is_loopback
    assert not parse_reference("ghcr.io/a/b").is_loopback
