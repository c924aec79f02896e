"""The shipped alerting kit, checked with the real tools: ``promtool check`` and ``promtool test
rules`` on config/prometheus/, ``amtool check-config`` and ``amtool config routes test`` on
config/alertmanager/. Every metric a specivod rule names must be one specivod exports (a renamed
metric fails here), the route and specivod's example ``alertmanager.matchers`` must agree on which
alerts roll back, and specivod's own alerts must never reach its webhook.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from specivod.config_loader import load_settings
from specivod.domain.alerts import matches_all, parse_matcher_lines
from tests.support.exported_metrics import exported_names

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "config" / "prometheus"
ALERTMANAGER = ROOT / "config" / "alertmanager"
SPECIVOD_RULES = PROMETHEUS / "specivod.rules.yml"
SPECIVO_RULES = PROMETHEUS / "specivo.rules.yml"
PRODUCTION = ALERTMANAGER / "production.yml"
EXAMPLE_CONFIG = ROOT / "config" / "specivod.example.toml"
SPECIVOD_RECEIVER = "specivod"

PROMETHEUS_OWN = frozenset({"up"})


def run(*argv: str) -> str:
    """A real tool's output; a missing tool or a failed check fails the test (never a skip)."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}{done.stderr}"
    return done.stdout


@dataclass(frozen=True)
class Rule:
    alert: str
    expr: str
    labels: Mapping[str, str]


def rules_in(path: Path) -> list[Rule]:
    document = yaml.safe_load(path.read_text())
    return [
        Rule(rule["alert"], rule["expr"], rule.get("labels", {}))
        for group in document["groups"]
        for rule in group["rules"]
    ]


# PromQL, enough to find metric names: strings, label matchers, ranges and grouping clauses are
# removed, then a name is an identifier that is neither a keyword nor a function call.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])[a-zA-Z_:][a-zA-Z0-9_:]*(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
    | {"group_left", "group_right"}
)


def metric_names(expr: str) -> set[str]:
    text = _STRING.sub('""', expr)
    for pattern in (_MATCHERS, _RANGE, _GROUPING):
        text = pattern.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def routes_for(labels: Mapping[str, str], config: Path = PRODUCTION) -> set[str]:
    """The receivers Alertmanager's real routing tree picks for an alert with these labels."""
    pairs = [f"{name}={value}" for name, value in labels.items()]
    output = run("amtool", "config", "routes", "test", f"--config.file={config}", *pairs)
    return set(output.strip().split(","))


def alert_labels(rule: Rule) -> dict[str, str]:
    return {"alertname": rule.alert, **rule.labels}


def example_matchers() -> Any:
    return parse_matcher_lines(load_settings(EXAMPLE_CONFIG).alertmanager.matchers)


def rule_test_files() -> Iterator[Path]:
    yield from sorted((PROMETHEUS / "tests").glob("*.yml"))


def test_promtool_checks_the_scrape_config_and_every_rule_file() -> None:
    output = run("promtool", "check", "config", str(PROMETHEUS / "prometheus.yml"))
    rule_files = sorted(PROMETHEUS.glob("*.rules.yml"))
    assert rule_files == [SPECIVO_RULES, SPECIVOD_RULES]
    for rules in rule_files:
        assert f"Checking {rules}" in output  # the scrape config loads each rule file
        run("promtool", "check", "rules", str(rules))


@pytest.mark.parametrize("tests", list(rule_test_files()), ids=lambda path: path.name)
def test_promtool_rule_unit_tests_pass(tests: Path) -> None:
    assert "SUCCESS" in run("promtool", "test", "rules", str(tests))


def test_every_alert_has_a_rule_unit_test() -> None:
    tested = {
        case["alertname"]
        for path in rule_test_files()
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    alerts = {rule.alert for path in (SPECIVOD_RULES, SPECIVO_RULES) for rule in rules_in(path)}
    assert alerts - tested == set(), "alerts no promtool test sees firing"


def test_every_metric_a_rule_names_is_exported_by_specivod() -> None:
    exported = exported_names()
    used = {name for rule in rules_in(SPECIVOD_RULES) for name in metric_names(rule.expr)}
    assert used, "no metric names found: the PromQL scanner is broken"
    assert used - exported - PROMETHEUS_OWN == set()


def test_the_metric_name_scanner_sees_names_and_nothing_else() -> None:
    expr = """
        (increase(a_total{trigger=~"x|y", restore="b_label"}[1h]) > 0 or (b unless c offset 7d))
        and on(job, instance) max without(result) (d_seconds) > 14 * 3600 + 1e3
        unless ignoring(version) sum by (job) (rate(e[5m:1m])) == bool 2 or absent(f)
    """
    assert metric_names(expr) == {"a_total", "b", "c", "d_seconds", "e", "f"}


def test_alertmanager_accepts_every_config_file() -> None:
    configs = sorted(ALERTMANAGER.glob("*.yml"))
    assert PRODUCTION in configs and len(configs) >= 2
    for config in configs:
        assert "SUCCESS" in run("amtool", "check-config", str(config))


@pytest.mark.parametrize("rule", rules_in(SPECIVO_RULES), ids=lambda rule: rule.alert)
def test_specivos_rollback_alerts_reach_specivod_and_people_and_match_its_matchers(
    rule: Rule,
) -> None:
    labels = alert_labels(rule)
    receivers = routes_for(labels)
    assert SPECIVOD_RECEIVER in receivers
    assert receivers - {SPECIVOD_RECEIVER}, "people must hear about it too"
    assert matches_all(example_matchers(), labels)


@pytest.mark.parametrize("rule", rules_in(SPECIVOD_RULES), ids=lambda rule: rule.alert)
def test_specivods_own_alerts_reach_people_and_never_roll_back(rule: Rule) -> None:
    labels = alert_labels(rule)
    receivers = routes_for(labels)
    assert receivers and SPECIVOD_RECEIVER not in receivers
    assert not matches_all(example_matchers(), labels)


def test_pages_are_routed_apart() -> None:
    page = routes_for({"alertname": "SpecivodRollbackFailed", "severity": "page"})
    warning = routes_for({"alertname": "SpecivodUpgradePending", "severity": "warning"})
    assert page.isdisjoint(warning)


def test_the_production_webhook_is_specivods_with_its_token_file() -> None:
    config = yaml.safe_load(PRODUCTION.read_text())
    receiver = next(each for each in config["receivers"] if each["name"] == SPECIVOD_RECEIVER)
    [webhook] = receiver["webhook_configs"]
    settings = load_settings(EXAMPLE_CONFIG)
    assert webhook["url"] == f"http://{settings.http.listen}/api/v1/alertmanager"
    authorization = webhook["http_config"]["authorization"]
    assert authorization["type"] == "Bearer"
    assert authorization["credentials_file"].startswith("/")
    assert "credentials" not in authorization
