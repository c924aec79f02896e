"""Property tests on the config loader through the CLI: every invalid configuration (wrong types,
unknown keys, bad durations, ranges and time zones, missing required sections and keys) is exit
78, without a traceback, with a message naming the offending key."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from specivod.cli import main
from specivod.domain.durations import parse_duration
from specivod.settings import (
    AlertmanagerSettings,
    DeploymentSettings,
    HealthSettings,
    HttpSettings,
    PolicySettings,
    RegistrySettings,
    WindowSettings,
)
from tests.unit.test_config import GOOD

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SECTIONS: dict[str, Any] = {
    "registry": RegistrySettings,
    "policy": PolicySettings,
    "deployment": DeploymentSettings,
    "http": HttpSettings,
    "window": WindowSettings,
    "health": HealthSettings,
    "alertmanager": AlertmanagerSettings,
}
DURATIONS = [
    ("registry", "poll_interval"),
    ("registry", "timeout"),
    ("health", "interval"),
    ("health", "timeout"),
    ("alertmanager", "watch_period"),
]
TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
NOT_SCALAR = st.one_of(
    st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.integers(), min_size=1),
    st.lists(st.integers(), min_size=1, max_size=3),
)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return (
            repr(value)
            if not isinstance(value, float) or math.isfinite(value)
            else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
        )
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    items = (f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
    return "{" + ", ".join(items) + "}"


def toml_document(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for section, table in data.items():
        for each in table if isinstance(table, list) else [table]:
            lines.append(f"[[{section}]]" if isinstance(table, list) else f"[{section}]")
            lines.extend(f"{json.dumps(k)} = {toml_value(v)}" for k, v in each.items())
    return "\n".join(lines) + "\n"


def good() -> dict[str, Any]:
    return tomllib.loads(GOOD)


def table(data: dict[str, Any], section: str) -> dict[str, Any]:
    current = data.setdefault(section, [{}] if section == "window" else {})
    return current[0] if isinstance(current, list) else current  # type: ignore[no-any-return]


@contextmanager
def config_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "registry.password").write_text("hunter2-registry\n")
    (tmp_path / "webhook.token").write_text("hunter2-token\n")
    yield tmp_path / "specivod.toml"


def check_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: dict[str, Any], key: str
) -> None:
    with config_dir(tmp_path) as path:
        path.write_text(toml_document(data))
        capsys.readouterr()
        code = main(["--config", str(path), "config", "check"])
        err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == 78, err
    assert key in err, err


def test_the_good_document_round_trips_and_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The writer used below is faithful: the unmutated document is accepted."""
    with config_dir(tmp_path) as path:
        path.write_text(toml_document(good()))
        assert main(["--config", str(path), "config", "check"]) == 0
    capsys.readouterr()


def fields(section: str) -> set[str]:
    model = SECTIONS[section]
    names = set(model.model_fields) | set(model.model_computed_fields)
    return names | {f.alias for f in model.model_fields.values() if f.alias}


@FUZZ
@given(
    section=st.sampled_from(sorted(SECTIONS)), key=st.from_regex(r"[a-z_]{1,15}", fullmatch=True)
)
def test_an_unknown_key_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, key: str
) -> None:
    assume(key not in fields(section))
    data = good()
    table(data, section)[key] = "x"
    prefix = f"{section}[0]" if section == "window" else section
    check_rejected(tmp_path, capsys, data, f"{prefix}.{key}")


@FUZZ
@given(key=st.from_regex(r"[a-z_]{1,15}", fullmatch=True))
def test_an_unknown_section_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    assume(
        key
        not in {
            "registry",
            "policy",
            "deployment",
            "window",
            "http",
            "health",
            "alertmanager",
            "backup",
            "state",
            "notifications",
            "daemon",
        }
    )
    data = good()
    data[key] = {"a": 1}
    check_rejected(tmp_path, capsys, data, key)


WRONG_TYPES = [
    ("registry", "image"),
    ("registry", "attempts"),
    ("registry", "page_size"),
    ("registry", "scheme"),
    ("policy", "range"),
    ("policy", "step"),
    ("deployment", "project_dir"),
    ("deployment", "compose_files"),
    ("window", "days"),
    ("window", "start"),
    ("window", "timezone"),
    ("http", "listen"),
]


def dotted(section: str, key: str) -> str:
    return f"{section}[0].{key}" if section == "window" else f"{section}.{key}"


@FUZZ
@given(target=st.sampled_from(WRONG_TYPES), value=NOT_SCALAR)
def test_a_wrong_type_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: tuple[str, str], value: Any
) -> None:
    section, key = target
    if key in ("days", "compose_files"):
        value = {"a": value} if isinstance(value, list) else [value]
    data = good()
    table(data, section)[key] = value
    check_rejected(tmp_path, capsys, data, dotted(section, key))


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(target=st.sampled_from(DURATIONS), value=NOT_SCALAR)
def test_a_duration_of_the_wrong_type_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: tuple[str, str], value: Any
) -> None:
    data = good()
    table(data, target[0])[target[1]] = value
    check_rejected(tmp_path, capsys, data, dotted(*target))


@FUZZ
@given(target=st.sampled_from(DURATIONS), text=TEXT)
def test_a_bad_duration_text_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: tuple[str, str], text: str
) -> None:
    try:
        valid = parse_duration(text) > timedelta(0)
    except ValueError:
        valid = False
    assume(not valid)
    data = good()
    table(data, target[0])[target[1]] = text
    check_rejected(tmp_path, capsys, data, dotted(*target))


@pytest.mark.parametrize("target", [("registry", "poll_interval"), ("health", "timeout")])
@pytest.mark.parametrize("value", ["99999999999d", 10**18, math.inf, "9" * 30 + "s"])
def test_a_huge_duration_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: tuple[str, str], value: Any
) -> None:
    data = good()
    table(data, target[0])[target[1]] = value
    check_rejected(tmp_path, capsys, data, dotted(*target))


def zone_refused(zone: str) -> bool:
    try:
        ZoneInfo(zone)
    except (KeyError, ValueError, OSError):
        return True
    return False


@FUZZ
@given(zone=TEXT)
def test_a_bad_timezone_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], zone: str
) -> None:
    assume(zone_refused(zone))
    data = good()
    table(data, "window")["timezone"] = zone
    check_rejected(tmp_path, capsys, data, "window[0].timezone")


@FUZZ
@given(
    target=st.sampled_from(
        [
            ("registry", "attempts", 1, 20),
            ("registry", "page_size", 1, 10_000),
            ("health", "retries", 1, None),
        ]
    ),
    value=st.integers(),
)
def test_an_integer_out_of_range_is_named(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    target: tuple[str, str, int, int | None],
    value: int,
) -> None:
    section, key, low, high = target
    assume(value < low or (high is not None and value > high))
    data = good()
    table(data, section)[key] = value
    check_rejected(tmp_path, capsys, data, dotted(section, key))


@FUZZ
@given(text=TEXT)
def test_a_bad_version_range_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    try:
        PolicySettings(range=text)
    except ValueError:
        pass
    else:
        assume(False)
    data = good()
    table(data, "policy")["range"] = text
    check_rejected(tmp_path, capsys, data, "policy.range")


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("registry", None),
        ("deployment", None),
        ("registry", "image"),
        ("deployment", "project_dir"),
        ("window", "days"),
        ("window", "start"),
        ("window", "end"),
    ],
)
def test_a_missing_required_section_or_key_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, key: str | None
) -> None:
    data = good()
    if key is None:
        del data[section]
    else:
        del table(data, section)[key]
    check_rejected(tmp_path, capsys, data, section if key is None else dotted(section, key))
