"""The smoke scenario: ``[[health.smoke]]`` steps run once, in order, after health passed.

Rules: the first failing step fails the scenario and the steps after it are skipped, except the
``cleanup`` steps, which always run (a cleanup step whose placeholders were never captured is
skipped); a cleanup step's own failure is logged and reported but fails nothing. Every message
leaving here has the secrets and every captured value masked.
"""

from __future__ import annotations

import logging
import secrets
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from specivod import redaction
from specivod.engine.smoke_steps import (
    SmokeCommands,
    SmokeHttp,
    StepFailed,
    run_command,
    run_request,
    step_url,
)
from specivod.settings import HealthSettings
from specivod.settings_smoke import SmokeCheck

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScenarioOutcome:
    passed: bool
    detail: str
    """Names each step that passed; on failure, starts with the step that failed and why."""


def _new_run_id() -> str:
    return secrets.token_hex(4)


def describe(step: SmokeCheck, base_url: str | None) -> str:
    """The step as configured: ``POST /api/issues`` or ``command `check.sh```."""
    if step.command is not None:
        return f"command `{shlex.join(redaction.redact_argv(step.command))}`"
    return f"{step.method} {redaction.redact(step_url(step, base_url))}"


class SmokeScenario:
    def __init__(
        self,
        settings: HealthSettings,
        http: SmokeHttp | None,
        commands: SmokeCommands | None,
        new_run_id: Callable[[], str] = _new_run_id,
    ) -> None:
        self._steps = settings.smoke
        self._secrets = settings.secret_values()
        self._base_url = settings.base_url
        self._timeout = settings.timeout.total_seconds()
        self._http = http
        self._commands = commands
        self._new_run_id = new_run_id

    async def run(self, version: str, from_version: str | None) -> ScenarioOutcome:
        values: dict[str, str] = {
            **self._secrets,
            "version": version,
            "from_version": from_version or "",
            "run_id": self._new_run_id(),
        }
        env = {
            "SPECIVOD_TARGET_VERSION": version,
            "SPECIVOD_FROM_VERSION": from_version or "",
            "SPECIVOD_BASE_URL": self._base_url or "",
        }
        masked = _Masker(self._secrets.values())
        failure: str | None = None
        passed: list[str] = []
        notes: list[str] = []
        for step in self._steps:
            if failure is not None and not step.cleanup:
                continue
            if missing := step.placeholders() - values.keys():
                names = ", ".join("{" + name + "}" for name in sorted(missing))
                notes.append(f"cleanup '{step.name}' skipped: {names} never captured")
                continue
            try:
                captured = await self._run(step, values, env)
            except StepFailed as error:
                why = masked(f"{describe(step, self._base_url)}: {error}")
                if step.cleanup:
                    log.warning("smoke cleanup step '%s' failed: %s", step.name, why)
                    notes.append(f"cleanup '{step.name}' failed: {why}")
                elif failure is None:
                    log.warning("smoke step '%s' failed: %s", step.name, why)
                    failure = f"failed smoke step '{step.name}': {why}"
                continue
            masked.add(captured.values())
            values.update(captured)
            log.info("smoke step '%s' passed", step.name)
            if failure is None:
                passed.append(f"'{step.name}'")
            else:
                notes.append(f"cleanup '{step.name}' passed")
        if failure is not None:
            return ScenarioOutcome(False, "; ".join([failure, *notes]))
        summary = f"smoke {', '.join(passed)} passed" if passed else "no smoke step passed"
        return ScenarioOutcome(True, "; ".join([summary, *notes]))

    async def _run(
        self, step: SmokeCheck, values: Mapping[str, str], env: Mapping[str, str]
    ) -> dict[str, str]:
        if step.command is not None:
            if self._commands is None:
                raise StepFailed("cannot run: this specivod has no command runner")
            await run_command(step, self._commands, values, env)
            return {}
        if self._http is None:
            raise StepFailed("cannot run: the HTTP probe cannot send smoke requests")
        return await run_request(step, self._http, values, self._base_url, self._timeout)


class _Masker:
    """Masks the secrets and captured values (those long enough to be secret at all) in a text,
    then anything ``redaction`` knows."""

    def __init__(self, values: Iterable[str]) -> None:
        self._values: set[str] = set()
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        for value in values:
            if len(value) >= redaction.MIN_REGISTERED:
                self._values.add(value)

    def __call__(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, redaction.MASK)
        return redaction.redact(text)
