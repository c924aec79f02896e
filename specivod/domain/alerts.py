"""Alertmanager label matchers and the identity of an alert, with Alertmanager's own semantics.

Rule: a matcher means here exactly what it means in an Alertmanager route. The syntax is the
classic one (``pkg/labels/parse.go``), which Alertmanager still accepts in every feature mode:
``name op value`` with ``op`` one of ``=``, ``!=``, ``=~``, ``!~``; the value may be double-quoted,
with ``\\"``, ``\\\\`` and ``\\n`` as escapes (any other backslash is literal). A config line may
hold several matchers separated by commas, optionally inside ``{...}``. Regular expressions are
anchored at both ends, and an absent label matches as the empty string. A set of matchers matches
when every one of them does.

Regular expressions are compiled with Python's ``re``, not Go's RE2; the common syntax is the same,
and a pattern only one of them accepts is reported as a parse error or compiled as Python reads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class MatchType(StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


class MatcherError(ValueError):
    """A matcher that Alertmanager would refuse; the message names the matcher and the reason."""

    def __init__(self, matcher: str, reason: str) -> None:
        super().__init__(f"matcher {matcher!r}: {reason}")
        self.matcher = matcher
        self.reason = reason


# Go's \s is [\t\n\f\r ]; "=~" must be tried before "=" (alternation is leftmost-first).
_WS = r"[\t\n\f\r ]"
_MATCHER = re.compile(
    rf"{_WS}*([a-zA-Z_:][a-zA-Z0-9_:]*){_WS}*(=~|=|!=|!~){_WS}*(.*?){_WS}*", re.DOTALL
)
_LEADING_FLAGS = re.compile(r"\(\?([a-zA-Z]+)\)")
_ESCAPES = {"n": "\n", '"': '"', "\\": "\\"}


@dataclass(frozen=True)
class Matcher:
    name: str
    type: MatchType
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def create(cls, name: str, type_: MatchType, value: str) -> Matcher:
        regex = None
        if type_ in (MatchType.REGEX, MatchType.NOT_REGEX):
            try:
                regex = re.compile(_scoped(value))
            except re.error as error:
                reason = f"bad regular expression {value!r}: {error.msg}"
                raise MatcherError(f"{name}{type_}{value}", reason) from None
        return cls(name, type_, value, regex)

    def matches_value(self, value: str) -> bool:
        if self.type is MatchType.EQUAL:
            return value == self.value
        if self.type is MatchType.NOT_EQUAL:
            return value != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(value) is not None
        return found if self.type is MatchType.REGEX else not found

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.matches_value(labels.get(self.name, ""))

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.type}"{escaped}"'


def _scoped(pattern: str) -> str:
    """Go allows ``(?i)`` at the start of a group; Python only at the start of the whole pattern,
    so a leading flag group becomes a scoped one: ``(?i)page`` → ``(?i:page)``."""
    flags = _LEADING_FLAGS.match(pattern)
    if flags is None:
        return f"(?:{pattern})"
    return f"(?{flags.group(1)}:{pattern[flags.end() :]})"


def parse_matcher(text: str) -> Matcher:
    """One matcher, e.g. ``severity=~"critical|page"``."""
    found = _MATCHER.fullmatch(text)
    if found is None:
        raise MatcherError(text, 'bad matcher format; write label="value" (=, !=, =~, !~)')
    name, op, raw = found.groups()
    try:
        return Matcher.create(name, MatchType(op), _unquote(text, raw))
    except MatcherError as error:
        raise MatcherError(text, error.reason) from None


def _unquote(text: str, raw: str) -> str:
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    value: list[str] = []
    closed = False
    index = 0
    while index < len(body):
        char = body[index]
        last = index == len(body) - 1
        if char == "\\" and not last:
            following = body[index + 1]
            value.append(_ESCAPES.get(following, "\\" + following))
            index += 2
            continue
        if char == '"':
            if not quoted or not last:
                raise MatcherError(text, f"unescaped double quote in value {raw}")
            closed = True
        else:
            value.append(char)
        index += 1
    if quoted and not closed:
        raise MatcherError(text, f"unescaped double quote in value {raw}")
    return "".join(value)


def parse_matchers(text: str) -> list[Matcher]:
    """A comma-separated list, optionally in braces: ``{alertname="Down", severity!="info"}``.

    Commas inside double quotes do not separate; a trailing comma is allowed.
    """
    body = text.removeprefix("{").removesuffix("}")
    tokens: list[str] = []
    token: list[str] = []
    inside_quotes = escaped = False
    for char in body:
        if char == "," and not inside_quotes:
            tokens.append("".join(token))
            token = []
            continue
        if char == '"':
            if escaped:
                escaped = False
            else:
                inside_quotes = not inside_quotes
        elif char == "\\":
            escaped = not escaped
        else:
            escaped = False
        token.append(char)
    rest = "".join(token).strip()
    if rest:
        tokens.append(rest)
    return [parse_matcher(token) for token in tokens]


def parse_matcher_lines(lines: Iterable[str]) -> tuple[Matcher, ...]:
    """The ``alertmanager.matchers`` setting: each line is a list as in an Alertmanager route."""
    return tuple(matcher for line in lines for matcher in parse_matchers(line))


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(matcher.matches(labels) for matcher in matchers)


@dataclass(frozen=True, order=True)
class AlertKey:
    """One firing of one alert. Alertmanager repeats a notification with the same fingerprint and
    start time; a new firing of the same alert has a new start time."""

    fingerprint: str
    starts_at: datetime
