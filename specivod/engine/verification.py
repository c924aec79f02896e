"""The health gate an upgrade must pass: every versioned service (whose image the version pins)
and the health service run that version's image and Docker reports each healthy, and the
optional health URL answers 2xx, within ``health.retries`` × ``health.interval``. A container
without a Docker healthcheck must also be seen running, unrestarted, at two checks in a row.
Then the smoke scenario runs, once: health is retried because a starting app is not healthy yet,
a scenario is not, because its steps change data (a retried "open an issue" opens two). The
verdict names the service, or the smoke step, that failed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from specivod.adapters.clock import Clock
from specivod.domain.errors import DeploymentError
from specivod.domain.references import ImageReference, parse_reference
from specivod.engine.ports import Deployment, HttpProbe, ServiceState
from specivod.engine.smoke import SmokeScenario
from specivod.engine.smoke_steps import SmokeCommands, SmokeHttp
from specivod.retrying import at_fixed_interval
from specivod.settings import HealthSettings

log = logging.getLogger(__name__)


class NotHealthyYet(Exception):
    """One check failed; the gate tries again until the budget is spent."""


class Vetoed(Exception):
    """Something outside the gate (a matching Alertmanager alert) failed the verification."""


Veto = Callable[[str], str | None]
"""Given the version being verified, the reason to fail it now, or ``None``."""


def _no_veto(_version: str) -> str | None:
    return None


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    attempts: int
    detail: str


def _split(image: str) -> tuple[str, str, str]:
    """``name:tag@digest`` → its three parts (a port in the host is not a tag)."""
    name, _, digest = image.partition("@")
    repository, separator, tag = name.rpartition(":")
    if not separator or "/" in tag:
        repository, tag = name, ""
    return repository, tag, digest


def runs_version(image: str, repository: ImageReference, version: str) -> bool | None:
    """Whether ``image`` is ``repository`` at ``version``; ``None`` when it is another image."""
    name, tag, _ = _split(image)
    try:
        if parse_reference(name) != repository:
            return None
    except ValueError:
        return None
    return tag == version


def _normalised(image: str) -> tuple[str, str, str]:
    """``(repository, tag, digest)`` the way Docker reads ``image`` (``postgres`` is
    ``docker.io/library/postgres:latest``)."""
    repository, tag, digest = _split(image)
    with contextlib.suppress(ValueError):
        repository = str(parse_reference(repository))
    return repository, tag or ("" if digest else "latest"), digest


def _same_image(running: str, expected: str) -> bool:
    return running == expected or _normalised(running) == _normalised(expected)


def _same_run(before: ServiceState | None, now: ServiceState) -> bool:
    """Whether ``now`` is the same container, not restarted since ``before`` was seen running."""
    return (
        before is not None
        and before.running
        and (before.container_id, before.started_at, before.restart_count)
        == (now.container_id, now.started_at, now.restart_count)
    )


class HealthGate:
    def __init__(
        self,
        deployment: Deployment,
        probe: HttpProbe,
        settings: HealthSettings,
        repository: ImageReference,
        clock: Clock,
        *,
        commands: SmokeCommands | None = None,
    ) -> None:
        """Smoke requests go through ``probe`` when it can send them (``SmokeHttp``); smoke
        command steps need ``commands`` (``ValueError`` now, not a failed upgrade later)."""
        if commands is None and any(step.is_command for step in settings.smoke):
            raise ValueError("smoke command steps are configured but no command runner is given")
        self._deployment = deployment
        self._probe = probe
        self._settings = settings
        self._repository = repository
        self._clock = clock
        self._images: dict[str, str] | None = None
        self._last_seen: dict[str, ServiceState] = {}
        self.veto: Veto = _no_veto
        http = probe if isinstance(probe, SmokeHttp) else None
        self._scenario = SmokeScenario(settings, http, commands)

    async def verify(
        self, version: str, from_version: str | None = None, *, scenario_decides: bool = True
    ) -> Verdict:
        """Health within the budget, then the smoke scenario once (``from_version``: the
        version being replaced, for the scenario's placeholders and commands). Without
        ``scenario_decides`` (the version a rollback returns to, which passed it before), a
        failed scenario is reported, not fatal: it more likely says the scenario is wrong."""
        health = await self._health(version)
        if not health.healthy or not self._settings.smoke:
            return health
        if (vetoed := self.veto(version)) is not None:
            return Verdict(False, health.attempts, f"verification vetoed: {vetoed}")
        scenario = await self._scenario.run(version, from_version)
        if not scenario.passed and scenario_decides:
            return Verdict(False, health.attempts, scenario.detail)
        if not scenario.passed:
            log.warning(
                "%s is healthy, but the smoke scenario fails on it too: %s",
                version,
                scenario.detail,
            )
            return Verdict(
                True,
                health.attempts,
                f"{health.detail}; the smoke scenario fails on {version} too, check the "
                f"scenario: {scenario.detail}",
            )
        return Verdict(True, health.attempts, f"{health.detail}, {scenario.detail}")

    async def _health(self, version: str) -> Verdict:
        settings = self._settings
        attempts = 0
        self._images = None
        self._last_seen = {}
        try:
            async for attempt in at_fixed_interval(
                settings.retries,
                settings.interval,
                NotHealthyYet,
                self._clock.sleep,
                self._clock.monotonic,
            ):
                with attempt:
                    attempts += 1
                    if (vetoed := self.veto(version)) is not None:
                        raise Vetoed(vetoed)
                    detail = await self._check_once(version)
        except Vetoed as veto:
            return Verdict(False, attempts, f"verification vetoed: {veto}")
        except NotHealthyYet as failure:
            budget = settings.budget.total_seconds()
            return Verdict(
                False, attempts, f"not healthy after {attempts} checks ({budget:.0f}s): {failure}"
            )
        return Verdict(True, attempts, detail)

    async def _expected_images(self, version: str) -> dict[str, str]:
        if self._images is None:
            try:
                self._images = await self._deployment.versioned_images(version)
            except DeploymentError as error:
                raise NotHealthyYet(f"cannot tell which services {version} pins: {error}") from None
        return self._images

    async def _check_once(self, version: str) -> str:
        """Every service is inspected at every check (so each one's "seen twice unrestarted"
        counts from consecutive checks); the failures of all of them make the message."""
        images = await self._expected_images(version)
        services = [self._settings.service, *(s for s in images if s != self._settings.service)]
        passed, failed = [], []
        for service in services:
            try:
                passed.append(await self._check_service(service, images.get(service), version))
            except NotHealthyYet as failure:
                failed.append(str(failure))
        if failed:
            raise NotHealthyYet("; ".join(failed))
        if self._settings.url:
            await self._expect_2xx(self._settings.url)
            passed.append("health URL 2xx")
        return ", ".join(passed)

    async def _check_service(self, service: str, expected: str | None, version: str) -> str:
        try:
            state = await self._deployment.service_state(service)
        except DeploymentError as error:  # a daemon hiccup: counts as one failed check
            raise NotHealthyYet(str(error)) from None
        last_seen = self._last_seen.get(service)
        self._last_seen[service] = state
        if state.container_id is None:
            raise NotHealthyYet(f"service {service} has no container")
        if (
            not _same_image(state.image, expected)
            if expected is not None
            else runs_version(state.image, self._repository, version) is False
        ):
            raise NotHealthyYet(f"{service} runs {state.image}, not version {version}")
        if not state.healthy:
            raise NotHealthyYet(state.describe())
        if state.health is None and not _same_run(last_seen, state):
            raise NotHealthyYet(
                f"{service} has no healthcheck; waiting to see it still running, "
                "unrestarted, at the next check"
            )
        return f"{service} {state.health or 'running, without restarts'}"

    async def _expect_2xx(self, url: str) -> None:
        try:
            answer = await self._probe.request("GET", url, self._settings.timeout.total_seconds())
        except OSError as error:
            raise NotHealthyYet(str(error)) from None
        if not 200 <= answer.status < 300:
            raise NotHealthyYet(f"GET {url} answered {answer.status}")
