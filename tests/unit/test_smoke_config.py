"""The smoke scenario's configuration: old single checks still load, placeholders resolve at load
time, secrets come from files and never show, and the example's scenario is valid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from sandbox.smoke import example_scenario
from specivod.cli import main
from specivod.config_loader import load_settings
from specivod.domain.errors import ConfigError

PASSWORD = "smoke-pass-4711"


def _config(tmp_path: Path, health: dict[str, Any]) -> Path:
    (tmp_path / "smoke-password").write_text(PASSWORD + "\n")
    path = tmp_path / "specivod.toml"
    document = {
        "registry": {"image": "127.0.0.1:5000/specivo/specivo"},
        "deployment": {"project_dir": str(tmp_path)},
        "health": health,
    }
    path.write_text(tomli_w.dumps(document))
    return path


def _with_scenario(tmp_path: Path, *steps: dict[str, Any], **health: Any) -> Path:
    secrets = {"password": str(tmp_path / "smoke-password")}
    return _config(tmp_path, {"secrets": secrets, **health, "smoke": list(steps)})


def test_an_old_single_request_check_still_loads(tmp_path: Path) -> None:
    old = {"name": "issue list", "url": "http://127.0.0.1:8080/issues", "contains": "issues"}

    settings = load_settings(_config(tmp_path, {"smoke": [old]}))

    [check] = settings.health.smoke
    assert (check.method, check.expect_status, check.contains) == ("GET", 200, "issues")


def test_the_example_scenario_loads_once_uncommented(tmp_path: Path) -> None:
    scenario = example_scenario()
    scenario["secrets"] = {"password": str(tmp_path / "smoke-password")}

    settings = load_settings(_config(tmp_path, scenario))

    names = [(step.name, step.cleanup) for step in settings.health.smoke]
    assert names == [
        ("sign in", False),
        ("open an issue", False),
        ("search for it", False),
        ("delete it", True),
    ]
    assert settings.health.secret_values() == {"password": PASSWORD}


@pytest.mark.parametrize(
    ("steps", "reason"),
    [
        (
            [{"name": "search", "url": "http://h/s?q={issue_id}"}],
            r"health: smoke\[0\] \('search'\): \{issue_id\} is not a secret, a capture of an "
            r"earlier step or one of version, from_version, run_id",
        ),
        (
            [
                {"name": "use", "url": "http://h/{token}"},
                {"name": "sign in", "url": "http://h/s", "capture": {"token": "token"}},
            ],
            r"smoke\[0\] \('use'\): \{token\} is not",
        ),
        (
            [{"name": "script", "command": ["smoke.sh", "--password", "{password}"]}],
            r"smoke\[0\] \('script'\): pass \{password\} to the command in env",
        ),
        ([{"name": "relative", "url": "/api/x"}], r"'/api/x' is a path; set health.base_url"),
        (
            [{"name": "both", "url": "http://h/", "command": ["true"]}],
            "either url .* or command, not both or neither",
        ),
        ([{"name": "neither"}], "not both or neither"),
        (
            [{"name": "c", "command": ["true"], "method": "POST"}],
            "a command step takes no request fields",
        ),
        ([{"name": "e", "url": "http://h/", "env": {"A": "b"}}], "env is for command steps"),
        (
            [{"name": "b", "url": "http://h/", "json": {"a": 1}, "form": {"a": "1"}}],
            "a json or a form body, not both",
        ),
        ([{"name": "p", "url": "http://h/", "json_exists": ["$."]}], "names nothing"),
        ([{"name": "u", "url": "ftp://h/"}], "must be an http"),
    ],
)
def test_a_bad_scenario_fails_at_load_naming_the_step(
    tmp_path: Path, steps: list[dict[str, Any]], reason: str
) -> None:
    with pytest.raises(ConfigError, match=reason):
        load_settings(_with_scenario(tmp_path, *steps))


def test_a_secret_named_like_a_built_in_is_refused(tmp_path: Path) -> None:
    path = _config(tmp_path, {"secrets": {"version": str(tmp_path / "smoke-password")}})

    with pytest.raises(ConfigError, match="secrets cannot be named version"):
        load_settings(path)


def test_a_missing_secret_file_names_the_key(tmp_path: Path) -> None:
    path = _config(tmp_path, {"secrets": {"password": str(tmp_path / "nowhere")}})

    with pytest.raises(ConfigError, match=r"health\.secrets\.password: cannot read secret file"):
        load_settings(path)


def test_config_show_prints_the_secret_file_not_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sign_in = {
        "name": "sign in",
        "method": "POST",
        "url": "/api/session",
        "form": {"user": "smoke", "password": "{password}"},
        "capture": {"token": "token"},
    }
    path = _with_scenario(tmp_path, sign_in, base_url="http://127.0.0.1:8080")

    assert main(["--config", str(path), "config", "show", "--json"]) == 0

    shown = capsys.readouterr().out
    assert PASSWORD not in shown
    health = json.loads(shown)["health"]
    assert health["secrets"] == {"password": str(tmp_path / "smoke-password")}
    assert health["smoke"][0]["form"] == {"user": "smoke", "password": "{password}"}


def test_a_json_body_is_shown_under_its_own_key(tmp_path: Path) -> None:
    step = {"name": "open", "url": "http://h/i", "method": "POST", "json": {"title": "t"}}

    settings = load_settings(_with_scenario(tmp_path, step))

    assert settings.masked()["health"]["smoke"][0]["json"] == {"title": "t"}
