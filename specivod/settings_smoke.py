"""The smoke scenario's configuration: ``[[health.smoke]]`` steps, run in order once health passed.

Rules: a step is either an HTTP request (``url``) or a command (``command``), never both. Text in a
step may use ``{name}`` placeholders: a secret (``health.secrets``), a value captured by an earlier
step, or a built-in (``version``, ``from_version``, ``run_id``); an unknown name is a configuration
error, found at load time. A command's arguments may use built-ins only: secrets and captures reach
a command through its ``env`` (an argv is visible to every user of the host, and to log lines).
JSON paths are dotted with list indexes: ``token``, ``$.issues.0.id``, ``issues[0].id``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from specivod import redaction
from specivod.domain.durations import format_duration, parse_duration

BUILT_INS = ("version", "from_version", "run_id")
"""Placeholders every step may use: the version verified, the one it replaces, a per-run id."""

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_SEGMENT = re.compile(r"[^.\[\]]+|\[(\d+)\]")


def parse_path(path: str) -> list[str | int]:
    """``$.issues[0].id`` or ``issues.0.id`` → ``["issues", 0, "id"]``; ``ValueError`` if empty."""
    text = path.strip().removeprefix("$").removeprefix(".")
    segments: list[str | int] = []
    for match in _SEGMENT.finditer(text.replace("[", ".[")):
        token = match.group(1) if match.group(1) is not None else match.group(0)
        segments.append(int(token) if token.isdigit() else token)
    if not segments:
        raise ValueError(f"JSON path {path!r} names nothing")
    return segments


def _valid_path(path: str) -> str:
    parse_path(path)
    return path


JsonPath = Annotated[str, AfterValidator(_valid_path)]
StepTimeout = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
StepUrl = Annotated[str, PlainSerializer(redaction.redact, return_type=str)]
"""An absolute http(s) URL, or a path appended to ``health.base_url``; dumped redacted."""

_HTTP_ONLY = ("headers", "json_body", "form", "contains", "json_equals", "json_exists", "capture")


class SmokeCheck(BaseModel):
    """One step of the smoke scenario."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True
    )

    name: str = Field(min_length=1)
    url: StepUrl = Field(
        "", description="http(s) URL, or a path after health.base_url; empty for a command step."
    )
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(None, alias="json", description="A JSON request body.")
    form: dict[str, str] | None = Field(None, description="A form-encoded request body.")
    expect_status: int = Field(200, ge=100, le=599)
    contains: str | None = Field(None, description="Text the response body must contain.")
    json_equals: dict[JsonPath, Any] = Field(
        default_factory=dict, description="JSON path → the value the body must hold there."
    )
    json_exists: list[JsonPath] = Field(
        default_factory=list, description="JSON paths the body must hold."
    )
    capture: dict[Annotated[str, Field(pattern=_NAME)], JsonPath] = Field(
        default_factory=dict, description="Placeholder name → JSON path of its value."
    )
    command: list[str] | None = Field(
        None, min_length=1, description="argv run on the host; exit 0 passes."
    )
    env: dict[str, str] = Field(default_factory=dict, description="For a command step.")
    timeout: StepTimeout | None = Field(
        None, description="Default: health.timeout for a request, 60s for a command."
    )
    cleanup: bool = Field(
        False, description="Runs even after an earlier step failed; its failure only warns."
    )

    @field_validator("url")
    @classmethod
    def _http_or_path(cls, value: str) -> str:
        if value and not re.match(r"(https?://|/)", value):
            raise ValueError("must be an http(s) URL, or a path (/...) after health.base_url")
        return value

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> SmokeCheck:
        if (self.command is None) == (not self.url):
            raise ValueError("a step has either url (a request) or command, not both or neither")
        if self.command is not None:
            given = [name for name in _HTTP_ONLY if name in self.model_fields_set]
            if given or self.method != "GET" or "expect_status" in self.model_fields_set:
                raise ValueError("a command step takes no request fields (url, method, body, ...)")
        elif self.env:
            raise ValueError("env is for command steps")
        if self.json_body is not None and self.form is not None:
            raise ValueError("a request has a json or a form body, not both")
        return self

    @property
    def is_command(self) -> bool:
        return self.command is not None

    def placeholders(self) -> set[str]:
        """Every ``{name}`` the step uses."""
        texts = [self.url, *self.headers.values(), *_strings(self.json_body), self.contains or ""]
        texts += [*(self.form or {}).values(), *_strings(list(self.json_equals.values()))]
        texts += [*(self.command or []), *self.env.values()]
        return {name for text in texts for name in PLACEHOLDER.findall(text)}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def check_scenario(steps: Iterable[SmokeCheck], secrets: Iterable[str], base_url: bool) -> None:
    """``ValueError`` naming the step whose placeholders are unknown at that point of the
    scenario, whose command argv uses a secret or a capture, or whose path lacks a base URL."""
    secret_names = set(secrets)
    if clash := secret_names & set(BUILT_INS):
        raise ValueError(f"secrets cannot be named {', '.join(sorted(clash))} (a built-in)")
    captured: set[str] = set()
    for index, step in enumerate(steps):
        where = f"smoke[{index}] ({step.name!r})"
        known = secret_names | captured | set(BUILT_INS)
        if unknown := step.placeholders() - known:
            names = ", ".join("{" + name + "}" for name in sorted(unknown))
            raise ValueError(
                f"{where}: {names} is not a secret, a capture of an earlier step or one of "
                f"{', '.join(BUILT_INS)}"
            )
        in_argv = {n for arg in step.command or [] for n in PLACEHOLDER.findall(arg)}
        if private := in_argv - set(BUILT_INS):
            names = ", ".join("{" + name + "}" for name in sorted(private))
            raise ValueError(f"{where}: pass {names} to the command in env, not in its arguments")
        if step.url.startswith("/") and not base_url:
            raise ValueError(f"{where}: the URL {step.url!r} is a path; set health.base_url")
        captured |= step.capture.keys()
