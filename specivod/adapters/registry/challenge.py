"""``WWW-Authenticate`` challenges (RFC 7235): ``Bearer realm="...",service="...", Basic realm=x``.

Quoted strings may hold commas, ``=`` and escaped quotes; one header may carry several challenges.
Unquoted values are accepted more liberally than the RFC's ``token`` (registries send bare URLs).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68 = re.compile(r"([A-Za-z0-9._~+/-]+=*)[ \t]*(?=,|$)")
_PARAM = re.compile(
    r"""([!#$%&'*+\-.^_`|~0-9A-Za-z]+)[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))"""
)
_PARAM_START = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+[ \t]*=")
_QUOTED_PAIR = re.compile(r"\\(.)")
_SEPARATORS = " \t,"


class ChallengeSyntaxError(ValueError):
    """The header is not a list of challenges."""


@dataclass(frozen=True)
class Challenge:
    """One challenge; ``scheme`` and parameter names are lower-cased."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str | None = None


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _params(header: str, pos: int, params: dict[str, str]) -> int:
    """Read ``name=value`` pairs from ``pos`` up to the start of the next challenge."""
    while True:
        match = _PARAM.match(header, pos)
        if match is None:
            raise ChallengeSyntaxError(f"expected name=value at offset {pos} in {header!r}")
        name, quoted, bare = match.groups()
        value = _QUOTED_PAIR.sub(r"\1", quoted) if quoted is not None else bare
        params.setdefault(name.lower(), value)
        pos = _skip(header, match.end(), " \t")
        if pos >= len(header):
            return pos
        if header[pos] != ",":
            raise ChallengeSyntaxError(f"expected ',' at offset {pos} in {header!r}")
        pos = _skip(header, pos, _SEPARATORS)
        if pos >= len(header) or not _PARAM_START.match(header, pos):
            return pos


def parse_challenges(header: str) -> list[Challenge]:
    """Every challenge in one ``WWW-Authenticate`` value, in order."""
    challenges: list[Challenge] = []
    pos = _skip(header, 0, _SEPARATORS)
    while pos < len(header):
        scheme = _TOKEN.match(header, pos)
        if scheme is None:
            raise ChallengeSyntaxError(f"expected an auth scheme at offset {pos} in {header!r}")
        pos = _skip(header, scheme.end(), " \t")
        params: dict[str, str] = {}
        token68: str | None = None
        if pos < len(header) and header[pos] != ",":
            if scheme.end() == pos:
                raise ChallengeSyntaxError(f"expected a space at offset {pos} in {header!r}")
            if (single := _TOKEN68.match(header, pos)) is not None:
                token68, pos = single.group(1), single.end()
            else:
                pos = _params(header, pos, params)
        challenges.append(Challenge(scheme.group().lower(), params, token68))
        pos = _skip(header, pos, _SEPARATORS)
    return challenges


def parse_header_values(values: Iterable[str]) -> list[Challenge]:
    """Challenges from every ``WWW-Authenticate`` line of a response."""
    return [challenge for value in values for challenge in parse_challenges(value)]
