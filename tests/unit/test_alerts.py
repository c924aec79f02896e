"""Alertmanager matchers: the parse cases of Alertmanager's own parse_test.go and the matching rules
of its matcher.go (anchored regexes, absent label = empty string, all must match)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specivod.domain.alerts import (
    AlertKey,
    Matcher,
    MatcherError,
    MatchType,
    matches_all,
    parse_matcher,
    parse_matcher_lines,
    parse_matchers,
)

EQ, NE, RE, NRE = MatchType.EQUAL, MatchType.NOT_EQUAL, MatchType.REGEX, MatchType.NOT_REGEX


def triples(matchers: list[Matcher]) -> list[tuple[str, str, str]]:
    return [(m.name, str(m.type), m.value) for m in matchers]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", []),
        ("{foo='}", [("foo", "=", "'")]),
        ("{foo=`}", [("foo", "=", "`")]),
        ("{foo=bar}", [("foo", "=", "bar")]),
        ('{foo="bar"}', [("foo", "=", "bar")]),
        ("{foo=~bar.*}", [("foo", "=~", "bar.*")]),
        ('{foo!~"bar.*"}', [("foo", "!~", "bar.*")]),
        ('{foo="bar", baz!="quux"}', [("foo", "=", "bar"), ("baz", "!=", "quux")]),
        ('{foo=""}', [("foo", "=", "")]),
        ('{foo="bar,quux", job="job1"}', [("foo", "=", "bar,quux"), ("job", "=", "job1")]),
        ('{foo = "bar", dings != "bums", }', [("foo", "=", "bar"), ("dings", "!=", "bums")]),
        ("foo=bar,dings!=bums", [("foo", "=", "bar"), ("dings", "!=", "bums")]),
        (r'{quote="She said: \"Hi!\""}', [("quote", "=", 'She said: "Hi!"')]),
        ("tricky=~~~", [("tricky", "=~", "~~")]),
        (r"trickier==\\=\=\"", [("trickier", "=", '=\\=\\="')]),
        (
            r'contains_quote != "\"" , contains_comma !~ "foo,bar" , ',
            [("contains_quote", "!=", '"'), ("contains_comma", "!~", "foo,bar")],
        ),
        ("{foo=bar}}", [("foo", "=", "bar}")]),
        ("{foo=,bar=}}", [("foo", "=", ""), ("bar", "=", "}")]),
        (r"{foo=bar\t}", [("foo", "=", "bar\\t")]),
        (r"{foo=bar\n}", [("foo", "=", "bar\n")]),
        ("{foo=bar\\}", [("foo", "=", "bar\\")]),
        (r"{foo=bar\\}", [("foo", "=", "bar\\")]),
        (r"{foo=bar\"}", [("foo", "=", 'bar"')]),
        ("job=", [("job", "=", "")]),
        ("{foo=", [("foo", "=", "")]),
        ("{foo=}b", [("foo", "=", "}b")]),
        ("  alertname  =  SpecivoDown  ", [("alertname", "=", "SpecivoDown")]),
        ("name:with:colons=x", [("name:with:colons", "=", "x")]),
    ],
)
def test_parses_like_alertmanager(text: str, expected: list[tuple[str, str, str]]) -> None:
    assert triples(parse_matchers(text)) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (",", "bad matcher format"),
        ("{,}", "bad matcher format"),
        ('job="value', "unescaped double quote"),
        ('job=value"', "unescaped double quote"),
        (r'trickier==\\=\=\""', "unescaped double quote"),
        ('contains_unescaped_quote = foo"bar', "unescaped double quote"),
        ('{invalid-name = "valid label"}', "bad matcher format"),
        ('{foo=~"invalid[regexp"}', "bad regular expression"),
        ('"foo=\\"bar\\""', "bad matcher format"),
        ("{{foo=", "bad matcher format"),
        ('severity~="page"', "bad matcher format"),
    ],
)
def test_refuses_what_alertmanager_refuses(text: str, reason: str) -> None:
    with pytest.raises(MatcherError, match=re.escape(reason)):
        parse_matchers(text)


def test_an_error_names_the_matcher_and_the_reason() -> None:
    with pytest.raises(MatcherError) as raised:
        parse_matcher_lines(['alertname="Down"', 'severity=~"crit[ical"'])
    assert 'severity=~"crit[ical"' in str(raised.value)
    assert "bad regular expression" in str(raised.value)


def test_each_config_line_may_hold_several_matchers() -> None:
    matchers = parse_matcher_lines(
        ['alertname="SpecivoDown"', 'severity=~"critical|page", team!=""']
    )
    assert triples(list(matchers)) == [
        ("alertname", "=", "SpecivoDown"),
        ("severity", "=~", "critical|page"),
        ("team", "!=", ""),
    ]


@pytest.mark.parametrize(
    ("matcher", "value", "matches"),
    [
        ('severity=~"critical|page"', "critical", True),
        ('severity=~"critical|page"', "page", True),
        ('severity=~"critical|page"', "critical-ish", False),
        ('severity=~"critical|page"', "xpage", False),
        ('severity=~"crit"', "critical", False),
        ('severity=~".*"', "", True),
        ('severity!~"critical|page"', "warning", True),
        ('severity!~"critical|page"', "page", False),
        ('severity="page"', "page", True),
        ('severity="page"', "Page", False),
        ('severity!="page"', "warning", True),
        ('severity=~"(?i)page"', "PAGE", True),
        ('severity=~"a.c"', "a\nc", False),
        ('severity=~"line\\nbreak"', "line\nbreak", True),
    ],
)
def test_regexes_are_anchored_at_both_ends(matcher: str, value: str, matches: bool) -> None:
    assert parse_matcher(matcher).matches({"severity": value}) is matches


@pytest.mark.parametrize(
    ("matcher", "matches"),
    [
        ('team=""', True),
        ('team!=""', False),
        ('team=~".*"', True),
        ('team=~".+"', False),
        ('team!~".+"', True),
        ('team="ops"', False),
        ('team!="ops"', True),
    ],
)
def test_an_absent_label_is_the_empty_string(matcher: str, matches: bool) -> None:
    assert parse_matcher(matcher).matches({"alertname": "SpecivoDown"}) is matches


def test_all_matchers_must_match() -> None:
    matchers = parse_matcher_lines(['alertname="SpecivoDown"', 'severity=~"critical|page"'])
    assert matches_all(matchers, {"alertname": "SpecivoDown", "severity": "page"})
    assert not matches_all(matchers, {"alertname": "SpecivoDown", "severity": "info"})
    assert not matches_all(matchers, {"alertname": "Other", "severity": "page"})


label_values = st.text(st.characters(codec="utf-8"), max_size=30)


@given(label_values)
def test_a_printed_matcher_parses_back_to_itself(value: str) -> None:
    for type_ in MatchType:
        if type_ in (RE, NRE):
            value = re.escape(value)
        original = Matcher.create("label", type_, value)
        assert parse_matcher(str(original)) == original


@given(label_values, label_values)
def test_an_escaped_regex_matches_exactly_its_literal(literal: str, other: str) -> None:
    matcher = Matcher.create("label", RE, re.escape(literal))
    assert matcher.matches({"label": literal})
    assert matcher.matches({"label": other}) is (other == literal)
    negated = Matcher.create("label", NRE, re.escape(literal))
    assert negated.matches({"label": other}) is (other != literal)


@given(label_values, label_values)
def test_equality_and_inequality_are_complements(wanted: str, actual: str) -> None:
    labels = {"label": actual}
    assert Matcher.create("label", EQ, wanted).matches(labels) is (wanted == actual)
    assert Matcher.create("label", NE, wanted).matches(labels) is (wanted != actual)


def test_alert_key_is_fingerprint_and_start() -> None:
    start = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    assert AlertKey("abc", start) == AlertKey("abc", start)
    assert AlertKey("abc", start) != AlertKey("abc", start.replace(minute=1))
    assert len({AlertKey("abc", start), AlertKey("abc", start)}) == 1
