"""Configuration: one pydantic model per concern, loaded from a TOML file with
``SPECIVOD_<SECTION>__<KEY>`` environment variables taking precedence.

Rules: unknown keys are errors; relative paths are resolved against the config file's directory
(``deployment.env_file`` against ``deployment.project_dir``); secrets are only ever read from files,
at load time (``FileSecret``), so a missing secret fails at start; they, and passwords written into
commands and URLs, are dumped masked and registered with ``redaction``, so none reaches a log.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    computed_field,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from specivod import redaction
from specivod.domain.alerts import MatcherError, parse_matcher_lines
from specivod.domain.durations import format_duration, parse_duration
from specivod.domain.errors import PolicyError
from specivod.domain.references import ImageReference, parse_reference
from specivod.domain.releases import AttentionRule
from specivod.domain.versions import Step, VersionPolicy
from specivod.domain.windows import DAY_NAMES, Window
from specivod.release_settings import AttentionLabel, valid_notes_template, valid_pattern
from specivod.settings_smoke import SmokeCheck, check_scenario

DEFAULT_CONFIG = Path("/etc/specivod/specivod.toml")
ENV_PREFIX = "SPECIVOD_"
MASK = redaction.MASK


def _longer_than_zero(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_longer_than_zero),
    PlainSerializer(format_duration, return_type=str),
]


NonNegativeDuration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


def _read_secret(path: Path) -> SecretStr:
    try:
        content = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ValueError(f"cannot read secret file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"secret file {path} is not UTF-8 text") from None
    if not content:
        raise ValueError(f"secret file {path} is empty")
    redaction.register(content)
    return SecretStr(content)


class FileSecret(BaseModel):
    """A secret kept in a file: configured as the file's path, read once when the configuration
    is loaded (an unreadable or empty file is a configuration error), dumped as its path. The
    value is a ``SecretStr`` and is registered with ``redaction``, so it is masked wherever it
    would be printed."""

    model_config = ConfigDict(frozen=True)

    path: Path
    value: SecretStr

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        if isinstance(data, str | Path):
            path = Path(data)
            return {"path": path, "value": _read_secret(path)}
        return data

    @model_serializer
    def _as_path(self) -> str:
        return str(self.path)


Masked = Annotated[SecretStr, PlainSerializer(lambda _: MASK, return_type=str)]
"""A secret in ``model_dump``: always the mask."""

Command = Annotated[list[str], PlainSerializer(redaction.redact_argv, return_type=list[str])]
"""A configured command; dumped with its secrets masked."""

Url = Annotated[
    str, Field(pattern=r"^https?://"), PlainSerializer(redaction.redact, return_type=str)
]
"""An http(s) URL; dumped with a password in it masked."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistrySettings(Section):
    image: str = Field(description="Repository without tag, e.g. docker.io/specivo/specivo.")
    username: str | None = Field(None, description="Registry user; needs password_file.")
    password_file: FileSecret | None = Field(None, description="File holding the password.")
    docker_config: Path | None = Field(
        None,
        description="A docker config.json (auths, credsStore, credHelpers). Default: "
        "$DOCKER_CONFIG/config.json or ~/.docker/config.json when username is not set.",
    )
    poll_interval: Duration = Field(timedelta(hours=6), description="How often to list tags.")
    timeout: Duration = Field(timedelta(seconds=30), description="Limit for one HTTP request.")
    attempts: int = Field(4, ge=1, le=20, description="Tries per request on 5xx/429/network.")
    page_size: int = Field(100, ge=1, le=10_000, description="Tags asked for per page.")
    scheme: Literal["auto", "https", "http"] = Field(
        "auto", description="auto: plain http for loopback registries, https otherwise."
    )

    @field_validator("image")
    @classmethod
    def _valid_reference(cls, value: str) -> str:
        parse_reference(value)
        return value

    @model_validator(mode="after")
    def _credentials(self) -> RegistrySettings:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file must be set together")
        return self

    @property
    def reference(self) -> ImageReference:
        return parse_reference(self.image)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def password(self) -> Masked | None:
        return self.password_file.value if self.password_file is not None else None


class PolicySettings(Section):
    range: str = Field("*", description="npm-style range, e.g. '~0.1', '^0.1.10', '>=0.1 <0.3'.")
    prerelease: bool = Field(False, description="Allow pre-release versions.")
    step: Step = Field(Step.MINOR, description="Largest move per upgrade: patch|minor|major|any.")
    min_age: NonNegativeDuration = Field(
        timedelta(0),
        description="A release becomes a target only after it has been known this long "
        "(image creation time when plausible, else first seen by specivod); e.g. '72h'.",
    )
    expected_duration: Duration = Field(
        timedelta(minutes=30),
        description="How long an unattended upgrade is assumed to take before the journal "
        "holds any; it starts only if the longest recent one fits before the window closes.",
    )
    release_notes: str | None = Field(
        None,
        description="Link to a release's notes; {version} is replaced by the tag, e.g. "
        "'https://github.com/specivo/specivo/releases/tag/v{version}'.",
    )
    attention_label: AttentionLabel | None = Field(
        None,
        description="{ name, value }: a release whose image carries this label or annotation "
        "is held from unattended upgrades (and blocks every release above it) until a person "
        "runs upgrade --to it or a later one.",
    )
    attention_pattern: str | None = Field(
        None,
        description="A regular expression searched in the release's "
        "org.opencontainers.image.description; a match holds the release like attention_label.",
    )

    _notes = field_validator("release_notes")(valid_notes_template)
    _pattern = field_validator("attention_pattern")(valid_pattern)

    @field_validator("range")
    @classmethod
    def _valid_range(cls, value: str) -> str:
        try:
            VersionPolicy(range=value)
        except PolicyError as error:
            raise ValueError(str(error)) from None
        return value

    def version_policy(self) -> VersionPolicy:
        return VersionPolicy(range=self.range, prerelease=self.prerelease, step=self.step)

    def attention_rule(self) -> AttentionRule:
        label = self.attention_label
        return AttentionRule(
            label=(label.name, label.value) if label else None,
            pattern=re.compile(self.attention_pattern) if self.attention_pattern else None,
        )


class DeploymentSettings(Section):
    project_dir: Path = Field(description="Directory holding the compose project and its .env.")
    compose_files: list[str] = Field(
        default_factory=list, description="Compose files (-f); empty: compose's default lookup."
    )
    project_name: str | None = Field(None, description="Compose project name (-p).")
    env_file: Path = Field(Path(".env"), description="The .env pinning the version.")
    version_variable: str = Field("SPECIVO_VERSION", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    data_dir_variable: str = Field("SPECIVO_DATA_DIR", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    compose_command: Command | None = Field(
        None, description="Default: 'docker compose', or 'docker-compose' when only v1 exists."
    )
    app_services: list[str] = Field(
        default_factory=list,
        description="Services stopped while data is restored; default: all but the database.",
    )
    command_timeout: Duration = Field(
        timedelta(minutes=30),
        description="Longest one compose command may run (a pull, up, dump or restore).",
    )

    @property
    def env_path(self) -> Path:
        return self.project_dir / self.env_file


class HealthSettings(Section):
    service: str = Field("api", description="Service whose Docker health gates an upgrade.")
    url: Url | None = Field(None, description="Must answer 2xx.")
    retries: int = Field(
        30, ge=2, description="Health checks before an upgrade counts as failed (at least 2)."
    )
    interval: Duration = Field(timedelta(seconds=5), description="Pause between health checks.")
    timeout: Duration = Field(timedelta(seconds=5), description="Limit for one HTTP check.")
    base_url: Url | None = Field(
        None,
        description="Specivo's address for the smoke scenario: a step URL written as a path is "
        "appended to it; commands get it as SPECIVOD_BASE_URL.",
    )
    secrets: dict[str, FileSecret] = Field(
        default_factory=dict,
        description="Placeholder name → file holding the value, e.g. password = "
        "'/etc/specivod/smoke-password' for {password} in smoke steps.",
    )
    smoke: list[SmokeCheck] = Field(
        default_factory=list, description="The smoke scenario: steps run in order after health."
    )

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, secrets: dict[str, FileSecret]) -> dict[str, FileSecret]:
        if bad := [name for name in secrets if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)]:
            raise ValueError(f"secret names must be identifiers: {', '.join(bad)}")
        return secrets

    @model_validator(mode="after")
    def _placeholders_resolve(self) -> HealthSettings:
        check_scenario(self.smoke, self.secrets, self.base_url is not None)
        return self

    @property
    def budget(self) -> timedelta:
        return self.retries * self.interval

    def secret_values(self) -> dict[str, str]:
        return {name: secret.value.get_secret_value() for name, secret in self.secrets.items()}


class BackupSettings(Section):
    dir: Path = Field(Path("/var/backups/specivod"), description="Where backups are kept (0700).")
    keep: int = Field(
        5, ge=1, description="Valid backups kept; older ones are deleted (safety backups aside)."
    )
    keep_set_aside_for: Duration = Field(
        timedelta(days=7),
        description="Age at which the trees of files a restore replaced, and the safety backups "
        "taken before restores, are deleted (never one a failed or unfinished transaction names).",
    )
    checksum: bool = Field(
        False,
        description="Find changed files by content too, not only by size, mtime and inode "
        "(reads the whole data dir at every backup and restore).",
    )
    database_service: str = Field("db", description="Compose service running PostgreSQL.")
    database_user: str = Field("specivo")
    database_name: str = Field("specivo")
    dump_command: Command | None = Field(None, description="Default: pg_dump -Fc.")
    restore_command: Command | None = Field(
        None,
        description="Reads the dump on stdin. Default: pg_restore --clean --if-exists into psql, "
        "in one transaction with the drop of the relations the backup lacks.",
    )
    fingerprint_query: str | None = Field(
        None, description="SQL whose result identifies the schema; default: hash of the schema."
    )
    min_free_bytes: ByteSize = Field(ByteSize(1 << 30), description="Free space kept spare.")
    every: Duration | None = Field(
        None,
        description="Scheduled backups: the daemon takes one when the newest valid backup is "
        "older than this, e.g. '24h' (inside a window when windows are configured). Unset: "
        "none.",
    )


_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day_index(day: str) -> int | None:
    name = day.strip().lower()
    for names in (DAY_NAMES, _FULL_DAY_NAMES):
        if name in names:
            return names.index(name)
    return None


class WindowSettings(Section):
    days: list[str] = Field(description="Days the window starts on: mon..sun.", min_length=1)
    start: str = Field(description="Local start time HH:MM.")
    end: str = Field(description="Local end time HH:MM; at or before start: next day.")
    timezone: str = Field("UTC", description="IANA time zone, e.g. Europe/Berlin.")

    @field_validator("days")
    @classmethod
    def _known_days(cls, days: list[str]) -> list[str]:
        unknown = [day for day in days if _day_index(day) is None]
        if unknown:
            raise ValueError(f"unknown day(s) {unknown}; use {', '.join(DAY_NAMES)}")
        return days

    @field_validator("start", "end")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError(f"{value!r} is not a time of day HH:MM (00:00-23:59)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    def window(self) -> Window:
        return Window(
            days=frozenset(index for day in self.days if (index := _day_index(day)) is not None),
            start=time.fromisoformat(self.start),
            end=time.fromisoformat(self.end),
            timezone=ZoneInfo(self.timezone),
        )


class HttpSettings(Section):
    listen: str = Field(
        "127.0.0.1:9717",
        pattern=r"^(\[[0-9a-fA-F:]+\]|[^:\[\]]+):\d{1,5}$",
        description="host:port",
    )
    token_file: FileSecret | None = Field(None, description="Bearer token for the webhook.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def token(self) -> Masked | None:
        return self.token_file.value if self.token_file is not None else None


class AlertmanagerSettings(Section):
    matchers: list[str] = Field(
        default_factory=list, description='Label matchers, e.g. alertname="SpecivoDown".'
    )
    watch_period: Duration = Field(timedelta(hours=2), description="After an upgrade.")

    @field_validator("matchers")
    @classmethod
    def _matcher_syntax(cls, matchers: list[str]) -> list[str]:
        try:
            parse_matcher_lines(matchers)
        except MatcherError as error:
            raise ValueError(str(error)) from None
        return matchers


def _url_lines(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class NotificationSettings(Section):
    urls_file: FileSecret | None = Field(
        None,
        description="File of apprise URLs (mailto://, slack://, ntfy://, json://...), one per "
        "line (# comments), read as a secret. Each gets every transaction's outcome and every "
        "failed scheduled backup; a failure to notify is logged and counted, never fails "
        "anything.",
    )
    timeout: Duration = Field(timedelta(seconds=30), description="Limit for one notification.")

    @model_validator(mode="after")
    def _register_urls(self) -> NotificationSettings:
        if self.urls_file is not None:
            urls = _url_lines(self.urls_file.value.get_secret_value())
            if not urls:
                raise ValueError(f"{self.urls_file.path} holds no URL")
            redaction.register(*urls)
        return self

    def urls(self) -> list[str]:
        found = self.urls_file
        return _url_lines(found.value.get_secret_value()) if found is not None else []


class StateSettings(Section):
    dir: Path = Field(Path("/var/lib/specivod"), description="Journal and lock.")


class Settings(BaseSettings):
    """The whole configuration; TOML first, environment on top."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    registry: RegistrySettings
    policy: PolicySettings = PolicySettings()
    deployment: DeploymentSettings
    health: HealthSettings = HealthSettings()
    backup: BackupSettings = BackupSettings()
    window: list[WindowSettings] = Field(default_factory=list)
    http: HttpSettings = HttpSettings()
    alertmanager: AlertmanagerSettings = AlertmanagerSettings()
    state: StateSettings = StateSettings()
    notifications: NotificationSettings = NotificationSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings

    def windows(self) -> list[Window]:
        return [window.window() for window in self.window]

    @model_validator(mode="after")
    def _register_secrets(self) -> Settings:
        """Secrets written into commands and URLs are masked everywhere from now on."""
        for command in (self.backup.dump_command, self.backup.restore_command):
            redaction.register(*redaction.secrets_in(command or []))
        urls = [self.health.url or "", *(check.url for check in self.health.smoke)]
        redaction.register(*redaction.secrets_in(urls))
        return self

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data: secrets (the ``Masked`` fields, and any
        secret inside a string) replaced by the mask."""
        data = self.model_dump(mode="json", exclude_none=True)
        return {key: _redacted(value) for key, value in data.items()}


def _redacted(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _redacted(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_redacted(item) for item in data]
    return redaction.redact(data) if isinstance(data, str) else data
