"""Configuration: TOML plus environment, clear errors, secrets masked, exit 78 from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specivod.cli import main
from specivod.config_loader import load_settings
from specivod.domain.errors import ConfigError

GOOD = """
[registry]
image = "127.0.0.1:5000/specivo/specivo"
username = "bot"
password_file = "registry.password"
poll_interval = "6h"

[policy]
range = "~0.1"

[deployment]
project_dir = "deployment"

[[window]]
days = ["sat", "sunday"]
start = "02:00"
end = "05:00"
timezone = "Europe/Berlin"

[http]
token_file = "webhook.token"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "registry.password").write_text("hunter2-registry\n")
    (tmp_path / "webhook.token").write_text("hunter2-token\n")
    path = tmp_path / "specivod.toml"
    path.write_text(GOOD)
    return path


def test_good_file_loads_with_paths_anchored_and_secrets_read(config: Path) -> None:
    settings = load_settings(config)

    assert settings.deployment.project_dir == config.parent / "deployment"
    assert settings.registry.password is not None
    assert settings.registry.password.get_secret_value() == "hunter2-registry"
    assert settings.registry.poll_interval.total_seconds() == 21600
    assert settings.windows()[0].days == frozenset({5, 6})
    assert settings.health.budget.total_seconds() == 150


def test_environment_overrides_the_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECIVOD_POLICY__RANGE", "^0.2.0")
    monkeypatch.setenv("SPECIVOD_HEALTH__RETRIES", "7")

    settings = load_settings(config)

    assert settings.policy.range == "^0.2.0"
    assert settings.health.retries == 7
    assert settings.registry.image == "127.0.0.1:5000/specivo/specivo"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("~0.1", "~~0.1"), "policy.range: invalid version range '~~0.1'"),
        (('"6h"', '"6x"'), "registry.poll_interval: invalid duration '6x'"),
        (('"6h"', '"0s"'), "registry.poll_interval: must be longer than zero"),
        (("Europe/Berlin", "Mars/Olympus"), "window[0].timezone: unknown IANA time zone"),
        (('"02:00"', '"25:00"'), "window[0].start: '25:00' is not a time of day"),
        (("project_dir", "project_dirr"), "deployment.project_dirr: unknown key"),
        (('"sunday"', '"someday"'), "window[0].days: unknown day(s) ['someday']"),
        (("registry.password", "missing.password"), "registry.password_file: cannot read secret"),
    ],
)
def test_bad_values_name_file_key_and_reason(
    config: Path, edit: tuple[str, str], expected: str
) -> None:
    config.write_text(GOOD.replace(*edit))

    with pytest.raises(ConfigError) as raised:
        load_settings(config)

    message = str(raised.value).replace("Value error, ", "")
    assert f"{config}: " in message
    assert expected.replace("Value error, ", "") in message


def test_bad_environment_value_names_the_variable(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPECIVOD_HEALTH__RETRIES", "many")
    with pytest.raises(ConfigError, match=r"environment SPECIVOD_HEALTH__RETRIES: health\.retries"):
        load_settings(config)


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[registry]\nimage = \n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML: .*line 2"):
        load_settings(path)


def test_cli_exits_78_without_a_traceback(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config.write_text(GOOD.replace("~0.1", "nonsense"))

    code = main(["--config", str(config), "config", "check"])

    captured = capsys.readouterr()
    assert code == 78
    assert "Traceback" not in captured.err
    assert "policy.range" in captured.err and str(config) in captured.err


def test_config_show_masks_secrets(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config), "config", "show", "--json"]) == 0

    shown = capsys.readouterr().out
    assert "hunter2" not in shown
    effective = json.loads(shown)
    assert effective["registry"]["password"] == "********"
    assert effective["http"]["token"] == "********"
    assert effective["registry"]["password_file"].endswith("registry.password")

    assert main(["--config", str(config), "config", "show"]) == 0
    assert "hunter2" not in capsys.readouterr().out


def test_the_shipped_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent.parent / "config" / "specivod.example.toml"
    settings = load_settings(example)
    assert settings.registry.reference.api_host == "registry-1.docker.io"
    assert settings.windows()


def test_an_empty_secret_file_names_the_key(config: Path) -> None:
    (config.parent / "webhook.token").write_text("\n")

    with pytest.raises(
        ConfigError, match=r"http\.token_file: secret file .*webhook\.token is empty"
    ):
        load_settings(config)


def test_a_secret_file_can_come_from_the_environment(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = config.parent / "other.token"
    other.write_text("hunter2-other\n")
    monkeypatch.setenv("SPECIVOD_HTTP__TOKEN_FILE", str(other))

    settings = load_settings(config)

    assert settings.http.token is not None
    assert settings.http.token.get_secret_value() == "hunter2-other"
    assert settings.http.token_file is not None and settings.http.token_file.path == other


def test_secrets_are_not_in_the_settings_repr_or_a_plain_dump(config: Path) -> None:
    settings = load_settings(config)

    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())
    assert "hunter2" not in settings.model_dump_json()


def test_smoke_secret_files_are_anchored_to_the_config_file(config: Path) -> None:
    (config.parent / "smoke.password").write_text("hunter2-smoke\n")
    config.write_text(GOOD + '\n[health]\nsecrets = { password = "smoke.password" }\n')

    settings = load_settings(config)

    secret = settings.health.secrets["password"]
    assert secret.path == config.parent / "smoke.password"
    assert secret.value.get_secret_value() == "hunter2-smoke"
