"""One smoke step: render its placeholders, send the request (or run the command), check the
answer, capture values for later steps.

Rule: a failure names the step's request as configured (its templates, never the rendered URL,
headers or body), so a secret or a captured token cannot reach a message through it; text taken
from an answer or a command's output is masked by the caller (``smoke.py``) before it goes out.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from specivod.engine.ports import HttpAnswer
from specivod.settings_smoke import PLACEHOLDER, SmokeCheck, parse_path

OUTPUT_LINES = 5
"""Lines of a failed command's output kept for the verdict."""
EXCERPT = 200
"""Characters of a response body quoted in a failure."""
COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


@runtime_checkable
class SmokeHttp(Protocol):
    """Requests with headers and a body, for smoke steps; network failures raise ``OSError``."""

    async def send(self, request: HttpRequest, timeout: float) -> HttpAnswer: ...


@dataclass(frozen=True)
class CommandOutcome:
    returncode: int
    output: str
    """stdout, then stderr."""


class SmokeCommands(Protocol):
    """Runs an operator's smoke command; ``TimeoutError`` once its process group was killed
    after ``timeout``; ``OSError`` when it cannot start."""

    async def run(
        self, argv: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> CommandOutcome: ...


class StepFailed(Exception):
    """The step did not pass; the message says why, in terms of the configured step."""


def render(text: str, values: Mapping[str, str], *, in_url: bool = False) -> str:
    """``{name}`` replaced by its value (percent-encoded in a URL); other braces stay."""

    def value(match: Any) -> str:
        found = values[match.group(1)]
        return urllib.parse.quote(found, safe="") if in_url else found

    return PLACEHOLDER.sub(value, text)


def _render_json(data: Any, values: Mapping[str, str]) -> Any:
    if isinstance(data, str):
        return render(data, values)
    if isinstance(data, Mapping):
        return {render(key, values): _render_json(item, values) for key, item in data.items()}
    if isinstance(data, list):
        return [_render_json(item, values) for item in data]
    return data


MISSING = object()


def lookup(document: Any, path: str) -> Any:
    """The value at ``path`` in a parsed JSON document, or ``MISSING``."""
    current = document
    for segment in parse_path(path):
        if isinstance(current, dict) and str(segment) in current:
            current = current[str(segment)]
        elif isinstance(current, list) and isinstance(segment, int) and segment < len(current):
            current = current[segment]
        else:
            return MISSING
    return current


def as_text(value: Any) -> str:
    """A JSON value as a placeholder holds it: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _matches(actual: Any, expected: Any) -> bool:
    """A string expected (a placeholder's value is one) matches the actual value's text."""
    if isinstance(expected, str):
        return as_text(actual) == expected
    return bool(actual == expected and type(actual) is type(expected))


def step_url(step: SmokeCheck, base_url: str | None) -> str:
    """The step's URL template, a path appended to ``base_url``."""
    if step.url.startswith("/") and base_url:
        return base_url.rstrip("/") + step.url
    return step.url


def build_request(step: SmokeCheck, values: Mapping[str, str], base_url: str | None) -> HttpRequest:
    headers = {name: render(value, values) for name, value in step.headers.items()}
    body: bytes | None = None
    content_type = None
    if step.json_body is not None:
        body = json.dumps(_render_json(step.json_body, values)).encode()
        content_type = "application/json"
    elif step.form is not None:
        form = {name: render(value, values) for name, value in step.form.items()}
        body = urllib.parse.urlencode(form).encode()
        content_type = "application/x-www-form-urlencoded"
    if content_type and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = content_type
    url = render(step_url(step, base_url), values, in_url=True)
    return HttpRequest(step.method, url, headers, body)


def check_answer(step: SmokeCheck, answer: HttpAnswer, values: Mapping[str, str]) -> dict[str, str]:
    """``StepFailed`` unless the answer is what the step expects; the captured values."""
    excerpt = " ".join(answer.body[:EXCERPT].split())
    if answer.status != step.expect_status:
        raise StepFailed(f"answered {answer.status}, not {step.expect_status}: {excerpt!r}")
    if step.contains is not None and render(step.contains, values) not in answer.body:
        raise StepFailed(f"the answer does not contain {step.contains!r}: {excerpt!r}")
    if not (step.json_equals or step.json_exists or step.capture):
        return {}
    try:
        document = json.loads(answer.body)
    except ValueError:
        raise StepFailed(f"the answer is not JSON: {excerpt!r}") from None
    for path in step.json_exists:
        if lookup(document, path) is MISSING:
            raise StepFailed(f"the answer has nothing at {path}: {excerpt!r}")
    for path, expected in step.json_equals.items():
        actual = lookup(document, path)
        if actual is MISSING:
            raise StepFailed(f"the answer has nothing at {path}: {excerpt!r}")
        if not _matches(actual, _render_json(expected, values)):
            raise StepFailed(f"{path} is {as_text(actual)!r}, not {as_text(expected)!r}")
    captured = {}
    for name, path in step.capture.items():
        value = lookup(document, path)
        if value is MISSING or value is None:
            raise StepFailed(f"nothing to capture as {{{name}}} at {path}: {excerpt!r}")
        captured[name] = as_text(value)
    return captured


async def run_request(
    step: SmokeCheck,
    http: SmokeHttp,
    values: Mapping[str, str],
    base_url: str | None,
    default_timeout: float,
) -> dict[str, str]:
    request = build_request(step, values, base_url)
    timeout = step.timeout.total_seconds() if step.timeout else default_timeout
    try:
        answer = await http.send(request, timeout)
    except OSError as error:
        raise StepFailed(f"no answer: {_reason(error)}") from None
    return check_answer(step, answer, values)


async def run_command(
    step: SmokeCheck, commands: SmokeCommands, values: Mapping[str, str], env: Mapping[str, str]
) -> None:
    argv = [render(argument, values) for argument in step.command or []]
    environment = {**env, **{name: render(value, values) for name, value in step.env.items()}}
    timeout = step.timeout.total_seconds() if step.timeout else COMMAND_TIMEOUT
    try:
        outcome = await commands.run(argv, environment, timeout)
    except TimeoutError:
        raise StepFailed(f"did not finish within {timeout:g}s (killed)") from None
    except OSError as error:
        raise StepFailed(f"could not start: {_reason(error)}") from None
    if outcome.returncode != 0:
        lines = [line.strip() for line in outcome.output.strip().splitlines() if line.strip()]
        tail = " / ".join(lines[-OUTPUT_LINES:])
        raise StepFailed(f"exited with {outcome.returncode}" + (f": {tail}" if tail else ""))


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__
