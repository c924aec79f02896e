"""The health gate an upgrade must pass: the health service's container runs the expected
version and Docker reports it healthy, the optional health URL answers 2xx, and every smoke check
passes, all within ``health.retries`` × ``health.interval``. A container without a Docker
healthcheck must also be seen running, unrestarted, at two checks in a row."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from specivod.adapters.clock import Clock
from specivod.adapters.protocols import Deployment, HttpProbe, ServiceState
from specivod.domain.errors import DeploymentError
from specivod.domain.references import ImageReference, parse_reference
from specivod.retrying import at_fixed_interval
from specivod.settings import HealthSettings, SmokeCheck

log = logging.getLogger(__name__)


class NotHealthyYet(Exception):
    """One check failed; the gate tries again until the budget is spent."""


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    attempts: int
    detail: str


def runs_version(image: str, repository: ImageReference, version: str) -> bool | None:
    """Whether ``image`` is ``repository`` at ``version``; ``None`` when it is another image."""
    name, separator, tag = image.rpartition(":")
    if not separator or "/" in tag:
        name, tag = image, ""
    try:
        if parse_reference(name) != repository:
            return None
    except ValueError:
        return None
    return tag == version


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
    ) -> None:
        self._deployment = deployment
        self._probe = probe
        self._settings = settings
        self._repository = repository
        self._clock = clock
        self._last_seen: ServiceState | None = None

    async def verify(self, version: str) -> Verdict:
        settings = self._settings
        attempts = 0
        self._last_seen = None
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
                    detail = await self._check_once(version)
        except NotHealthyYet as failure:
            budget = settings.budget.total_seconds()
            return Verdict(
                False, attempts, f"not healthy after {attempts} checks ({budget:.0f}s): {failure}"
            )
        return Verdict(True, attempts, detail)

    async def _check_once(self, version: str) -> str:
        try:
            state = await self._deployment.service_state(self._settings.service)
        except DeploymentError as error:  # a daemon hiccup: counts as one failed check
            raise NotHealthyYet(str(error)) from None
        last_seen, self._last_seen = self._last_seen, state
        if state.container_id is None:
            raise NotHealthyYet(f"service {self._settings.service} has no container")
        if runs_version(state.image, self._repository, version) is False:
            raise NotHealthyYet(f"{state.service} runs {state.image}, not version {version}")
        if not state.healthy:
            raise NotHealthyYet(state.describe())
        if state.health is None and not _same_run(last_seen, state):
            raise NotHealthyYet(
                f"{state.service} has no healthcheck; waiting to see it still running, "
                "unrestarted, at the next check"
            )
        passed = [f"{state.service} {state.health or 'running, without restarts'}"]
        if self._settings.url:
            await self._expect(self._settings.url, "GET", None, None)
            passed.append("health URL 2xx")
        for check in self._settings.smoke:
            await self._smoke(check)
            passed.append(f"smoke '{check.name}'")
        return ", ".join(passed)

    async def _smoke(self, check: SmokeCheck) -> None:
        await self._expect(check.url, check.method, check.expect_status, check.contains)

    async def _expect(
        self, url: str, method: str, status: int | None, contains: str | None
    ) -> None:
        try:
            answer = await self._probe.request(method, url, self._settings.timeout.total_seconds())
        except OSError as error:
            raise NotHealthyYet(str(error)) from None
        ok_status = answer.status == status if status is not None else 200 <= answer.status < 300
        if not ok_status:
            raise NotHealthyYet(f"{method} {url} answered {answer.status}")
        if contains is not None and contains not in answer.body:
            raise NotHealthyYet(f"{method} {url} did not contain {contains!r}")
