"""The Grafana dashboard, config/grafana/specivod.json: importable (one ``DS_PROMETHEUS`` input,
no data source of its own), every PromQL expression parses (``promtool check rules`` on a rules
file made from them), and every metric it names is one specivod exports.

Rule: the exported names come from rendering specivod's own registry (the daemon's collectors on
a snapshot where every value is known), never from a list kept by hand, so a renamed metric fails
here. tests/e2e/test_dashboard_real.py reuses ``queries`` and asks a real Prometheus for each.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.exported_metrics import exported_names

ROOT = Path(__file__).parent.parent.parent
DASHBOARD = ROOT / "config" / "grafana" / "specivod.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
GRAFANA_BUILTIN = {"type": "grafana", "uid": "-- Grafana --"}
GRAFANA_VARIABLES = {
    "__interval": "1m",
    "__rate_interval": "1m",
    "__range": "1h",
    "instance": ".*",
}
"""What Grafana puts in for its variables; a variable missing here fails ``promql``."""
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
LABEL_VALUES = re.compile(r"^label_values\((\w+),\s*\w+\)$")

STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
MATCHERS = re.compile(r"\{[^}]*\}")
RANGES = re.compile(r"\[[^\]]*\]")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}


@dataclass(frozen=True)
class Query:
    where: str
    """Which panel (or annotation) and which of its targets, for messages."""
    expr: str
    """The expression with Grafana's variables replaced (``promql``)."""
    is_panel: bool
    """A panel's query: the real-stack test asks Prometheus for its data."""


def load_dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def promql(expression: str) -> str:
    """``expression`` as Prometheus receives it from Grafana."""

    def value(found: re.Match[str]) -> str:
        name = found.group(1) or found.group(2)
        assert name in GRAFANA_VARIABLES, f"unknown Grafana variable ${name} in {expression}"
        return GRAFANA_VARIABLES[name]

    return VARIABLE.sub(value, expression)


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(dashboard: dict[str, Any]) -> list[Query]:
    found = [
        Query(f"panel {p['id']} {p['title']!r} {t['refId']}", promql(t["expr"]), True)
        for p in panels(dashboard)
        for t in p.get("targets", [])
    ]
    found.extend(
        Query(f"annotation {a['name']!r}", promql(a["expr"]), False)
        for a in dashboard["annotations"]["list"]
        if "expr" in a
    )
    return found


def metric_names(expression: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, aggregations,
    keywords, label names (in matchers and grouping clauses) or durations."""
    bare = GROUPING.sub(" ", RANGES.sub(" ", MATCHERS.sub(" ", STRINGS.sub(" ", expression))))
    return {
        name for name, call in IDENTIFIER.findall(bare) if not call and name.lower() not in KEYWORDS
    }


def promtool_check(
    expressions: dict[str, str], directory: Path
) -> subprocess.CompletedProcess[str]:
    """``promtool check rules`` on a rules file recording each expression under its key."""
    rules = [{"record": record, "expr": expr} for record, expr in expressions.items()]
    path = directory / "dashboard.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # YAML
    return subprocess.run(
        ["promtool", "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def record_names(found: list[Query]) -> dict[str, str]:
    return {f"dashboard:query_{index}": query.expr for index, query in enumerate(found)}


def test_every_expression_parses(tmp_path: Path) -> None:
    found = queries(load_dashboard())
    assert sum(query.is_panel for query in found) >= 20
    checked = promtool_check(record_names(found), tmp_path)
    where = "\n".join(f"dashboard:query_{i} = {q.where}" for i, q in enumerate(found))
    assert checked.returncode == 0, f"{checked.stdout}{checked.stderr}\n{where}"
    assert f"SUCCESS: {len(found)} rules found" in checked.stdout


def test_promtool_refuses_an_expression_that_does_not_parse(tmp_path: Path) -> None:
    checked = promtool_check(
        {"dashboard:good": "specivod_upgrade_available", "dashboard:bad": "sum by (result (x)"},
        tmp_path,
    )
    assert checked.returncode != 0
    assert "dashboard:bad" in checked.stdout + checked.stderr


def test_every_metric_the_dashboard_names_is_exported() -> None:
    dashboard = load_dashboard()
    exported = exported_names()
    named = {query.where: metric_names(query.expr) for query in queries(dashboard)}
    for variable in dashboard["templating"]["list"]:
        definition = LABEL_VALUES.match(variable["definition"])
        assert definition is not None, variable["definition"]
        assert variable["query"]["query"] == variable["definition"]
        named[f"variable {variable['name']}"] = {definition.group(1)}
    unknown = {where: names - exported for where, names in named.items() if names - exported}
    assert not unknown, f"not exported by specivod: {unknown}"
    assert all(named.values()), [where for where, names in named.items() if not names]


def test_metric_names_are_found_and_functions_labels_and_durations_are_not() -> None:
    expression = promql(
        "histogram_quantile(0.9, sum by (instance, le) (rate(specivod_upgrade_duration_"
        'seconds_bucket{instance=~"$instance", le!="x"}[$__rate_interval] offset 5m)))'
        " / on (instance) group_left specivod_renamed_total > bool 1e3"
    )
    assert metric_names(expression) == {
        "specivod_upgrade_duration_seconds_bucket",
        "specivod_renamed_total",
    }
    assert "specivod_renamed_total" not in exported_names()


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    named = set().union(*(metric_names(query.expr) for query in queries(load_dashboard())))
    wanted = {
        "specivod_deployed_version_info",
        "specivod_target_version_info",
        "specivod_upgrade_state",
        "specivod_upgrades_total",
        "specivod_rollbacks_total",
        "specivod_upgrade_duration_seconds_bucket",
        "specivod_backup_duration_seconds",
        "specivod_last_backup_timestamp_seconds",
        "specivod_backup_size_bytes",
        "specivod_registry_last_success_timestamp_seconds",
        "specivod_registry_polls_total",
        "specivod_maintenance_window_open",
        "specivod_next_window_timestamp_seconds",
    }
    assert wanted <= named, wanted - named


def _datasources(node: object) -> list[object]:
    if isinstance(node, dict):
        own = [node["datasource"]] if "datasource" in node else []
        return own + [found for value in node.values() for found in _datasources(value)]
    if isinstance(node, list):
        return [found for value in node for found in _datasources(value)]
    return []


def test_the_dashboard_imports_with_one_prometheus_input() -> None:
    dashboard = load_dashboard()
    assert dashboard["__inputs"] == [
        {
            "name": "DS_PROMETHEUS",
            "label": "Prometheus",
            "description": "The Prometheus that scrapes specivod's /metrics",
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]
    assert dashboard["id"] is None
    assert dashboard["uid"] == "specivod"
    used = _datasources(dashboard)
    assert used and all(each in (DATASOURCE, GRAFANA_BUILTIN) for each in used), used
    assert used.count(GRAFANA_BUILTIN) == 1  # the built-in annotations
    kinds = {panel["type"] for panel in panels(dashboard)} - {"row"}
    required = {r["id"] for r in dashboard["__requires"] if r["type"] == "panel"}
    assert kinds == required


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    every = panels(load_dashboard())
    ids = [panel["id"] for panel in every]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], int] = {}
    for panel in every:
        box = panel["gridPos"]
        assert box["x"] >= 0 and box["x"] + box["w"] <= 24, panel["title"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]
        for target in panel.get("targets", []):
            assert target["expr"] and target["refId"], panel["title"]
