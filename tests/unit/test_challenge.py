"""The WWW-Authenticate parser: the shapes registries send, and the malformed ones."""

from __future__ import annotations

import pytest

from specivod.adapters.registry.challenge import (
    Challenge,
    ChallengeSyntaxError,
    parse_challenges,
    parse_header_values,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/alpine:pull"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:library/alpine:pull",
                    },
                )
            ],
        ),
        ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
        ("basic realm=simple", [Challenge("basic", {"realm": "simple"})]),
        (
            "Bearer realm=https://ghcr.io/token,service=ghcr.io",
            [Challenge("bearer", {"realm": "https://ghcr.io/token", "service": "ghcr.io"})],
        ),
        (
            'Bearer realm = "a" , service= "b"',
            [Challenge("bearer", {"realm": "a", "service": "b"})],
        ),
        (
            'Bearer realm="x",scope="repository:a:pull,push repository:b:pull",'
            'error="insufficient_scope"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "x",
                        "scope": "repository:a:pull,push repository:b:pull",
                        "error": "insufficient_scope",
                    },
                )
            ],
        ),
        (
            r'Basic realm="say \"hi\", \\ please"',
            [Challenge("basic", {"realm": 'say "hi", \\ please'})],
        ),
        ('Basic realm=""', [Challenge("basic", {"realm": ""})]),
        (
            'Bearer realm="a=b,c", Basic realm="r"',
            [Challenge("bearer", {"realm": "a=b,c"}), Challenge("basic", {"realm": "r"})],
        ),
        (
            'Negotiate, Basic realm="r", NTLM',
            [Challenge("negotiate"), Challenge("basic", {"realm": "r"}), Challenge("ntlm")],
        ),
        ("Newauth abc123==", [Challenge("newauth", token68="abc123==")]),
        (
            'Newauth abc123==, Basic realm="r"',
            [Challenge("newauth", token68="abc123=="), Challenge("basic", {"realm": "r"})],
        ),
        ("Bearer realm=", [Challenge("bearer", token68="realm=")]),
        ('BEARER REALM="x"', [Challenge("bearer", {"realm": "x"})]),
        ('Basic realm="first", realm="second"', [Challenge("basic", {"realm": "first"})]),
        ("", []),
        (" , ", []),
        ('Basic realm="r",', [Challenge("basic", {"realm": "r"})]),
    ],
)
def test_parses(header: str, expected: list[Challenge]) -> None:
    assert parse_challenges(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        'Bearer realm="unterminated',
        '"quoted" realm=x',
        'Bearer realm="a" service="b"',
        'Bearer realm="a",=b',
        "Basic=realm",
    ],
)
def test_rejects_malformed(header: str) -> None:
    with pytest.raises(ChallengeSyntaxError):
        parse_challenges(header)


def test_several_header_lines() -> None:
    assert parse_header_values(['Basic realm="a"', 'Bearer realm="b"']) == [
        Challenge("basic", {"realm": "a"}),
        Challenge("bearer", {"realm": "b"}),
    ]
