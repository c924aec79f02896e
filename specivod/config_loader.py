"""Load ``Settings`` from a TOML file plus the environment, and turn every failure into one
``ConfigError`` whose message names the file (or environment variable), the key and the reason."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from specivod.domain.errors import ConfigError
from specivod.settings import ENV_PREFIX, Settings

_RELATIVE_PATHS = (
    ("deployment", "project_dir"),
    ("registry", "password_file"),
    ("registry", "docker_config"),
    ("backup", "dir"),
    ("state", "dir"),
    ("http", "token_file"),
)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (set --config or SPECIVOD_CONFIG)") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None


def _anchored(text: str, base: Path) -> str:
    value = Path(text).expanduser()
    return str(value if value.is_absolute() else base / value)


def _anchor_paths(data: dict[str, Any], base: Path) -> None:
    for section, key in _RELATIVE_PATHS:
        table = data.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str):
            table[key] = _anchored(table[key], base)
    health = data.get("health")
    secrets = health.get("secrets") if isinstance(health, dict) else None
    if isinstance(secrets, dict):
        for name, path in secrets.items():
            if isinstance(path, str):
                secrets[name] = _anchored(path, base)


def _key(location: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for part in location:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        else:
            parts.append(part)
    return ".".join(parts)


def _source_of(location: tuple[int | str, ...], path: Path, environ: Mapping[str, str]) -> str:
    names = [part for part in location if isinstance(part, str)]
    for length in range(len(names), 0, -1):
        variable = ENV_PREFIX + "__".join(names[:length]).upper()
        if variable in {name.upper() for name in environ}:
            return f"environment {variable}"
    return str(path)


def _describe(error: ValidationError, path: Path, environ: Mapping[str, str]) -> str:
    lines = []
    for detail in error.errors(include_url=False, include_input=False):
        location = tuple(detail["loc"])
        reason = detail["msg"].removeprefix("Value error, ")
        if detail["type"] == "extra_forbidden":
            reason = "unknown key"
        lines.append(f"{_source_of(location, path, environ)}: {_key(location)}: {reason}")
    return "\n".join(lines)


def load_settings(path: Path) -> Settings:
    """Read, validate and return the settings, or raise ``ConfigError``."""
    data = _read_toml(path)
    _anchor_paths(data, path.parent.resolve())
    try:
        return Settings(**data)
    except ValidationError as error:
        raise ConfigError(_describe(error, path, os.environ)) from None
