"""The health gate: what counts as healthy, and the budget it keeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from specivod.adapters.protocols import HttpAnswer, ServiceState
from specivod.domain.errors import DeploymentError
from specivod.domain.references import parse_reference
from specivod.engine.verification import HealthGate
from specivod.settings import HealthSettings, SmokeCheck
from tests.unit.fakes import FakeClock

IMAGE = "127.0.0.1:5000/specivo/specivo"
HEALTHY = ServiceState("api", "c1", "running", "healthy", f"{IMAGE}:0.2.0", "t1")
STARTING = replace(HEALTHY, health="starting")
NO_HEALTHCHECK = replace(HEALTHY, health=None)


class ScriptedDeployment:
    """Answers each ``service_state`` with the next state (or error) of a script; the last one
    repeats."""

    def __init__(self, script: Sequence[ServiceState | Exception]) -> None:
        self.script = list(script)
        self.asked = 0

    async def service_state(self, service: str) -> ServiceState:
        answer = self.script[min(self.asked, len(self.script) - 1)]
        self.asked += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


class ScriptedProbe:
    def __init__(self, answers: dict[str, HttpAnswer | OSError]) -> None:
        self.answers = answers

    async def request(self, method: str, url: str, timeout: float) -> HttpAnswer:
        answer = self.answers[url]
        if isinstance(answer, OSError):
            raise answer
        return answer


def _gate(
    script: Sequence[ServiceState | Exception],
    *,
    probe: ScriptedProbe | None = None,
    retries: int = 5,
    **settings: object,
) -> tuple[HealthGate, ScriptedDeployment, FakeClock]:
    deployment = ScriptedDeployment(script)
    clock = FakeClock()
    health = HealthSettings.model_validate(
        {"retries": retries, "interval": timedelta(seconds=2), **settings}
    )
    gate = HealthGate(
        deployment,  # type: ignore[arg-type]
        probe or ScriptedProbe({}),
        health,
        parse_reference(IMAGE),
        clock,
    )
    return gate, deployment, clock


async def test_healthy_after_starting_passes_within_the_budget() -> None:
    gate, _, clock = _gate([STARTING, STARTING, HEALTHY])

    verdict = await gate.verify("0.2.0")

    assert verdict.healthy and verdict.attempts == 3
    assert clock.slept == 4.0


async def test_never_healthy_fails_after_every_retry_at_a_fixed_rate() -> None:
    gate, deployment, clock = _gate([replace(HEALTHY, health="unhealthy")], retries=4)

    verdict = await gate.verify("0.2.0")

    assert not verdict.healthy
    assert deployment.asked == 4
    assert clock.slept == 6.0, "4 checks, 2 s apart, fit in 3 intervals"
    assert "not healthy after 4 checks (8s)" in verdict.detail
    assert "health unhealthy" in verdict.detail


async def test_a_container_of_another_version_does_not_count() -> None:
    gate, _, _ = _gate([replace(HEALTHY, image=f"{IMAGE}:0.1.10")], retries=2)

    verdict = await gate.verify("0.2.0")

    assert not verdict.healthy
    assert "not version 0.2.0" in verdict.detail


async def test_a_daemon_hiccup_is_one_failed_check_not_the_end() -> None:
    gate, deployment, _ = _gate([DeploymentError("compose ps: connection reset"), HEALTHY])

    verdict = await gate.verify("0.2.0")

    assert verdict.healthy and deployment.asked == 2


async def test_without_a_healthcheck_a_restarting_container_never_passes() -> None:
    restarts = [replace(NO_HEALTHCHECK, restart_count=count) for count in range(6)]
    gate, _, _ = _gate(restarts, retries=5)

    verdict = await gate.verify("0.2.0")

    assert not verdict.healthy
    assert "unrestarted" in verdict.detail


async def test_without_a_healthcheck_a_steady_container_passes_at_the_second_check() -> None:
    gate, deployment, _ = _gate([NO_HEALTHCHECK])

    verdict = await gate.verify("0.2.0")

    assert verdict.healthy and deployment.asked == 2
    assert "without restarts" in verdict.detail


async def test_health_url_and_smoke_checks_must_pass_too() -> None:
    probe = ScriptedProbe(
        {
            "http://127.0.0.1:8080/healthz": HttpAnswer(200, "ok"),
            "http://127.0.0.1:8080/api/version": HttpAnswer(200, '{"version": "0.1.10"}'),
        }
    )
    smoke = SmokeCheck(name="version", url="http://127.0.0.1:8080/api/version", contains='"0.2.0"')
    gate, _, _ = _gate(
        [HEALTHY], probe=probe, retries=2, url="http://127.0.0.1:8080/healthz", smoke=[smoke]
    )

    verdict = await gate.verify("0.2.0")

    assert not verdict.healthy
    assert "did not contain '\"0.2.0\"'" in verdict.detail

    probe.answers["http://127.0.0.1:8080/api/version"] = HttpAnswer(200, '{"version": "0.2.0"}')
    verdict = await gate.verify("0.2.0")

    assert verdict.healthy
    assert verdict.detail == "api healthy, health URL 2xx, smoke 'version'"


async def test_an_unreachable_health_url_is_a_failed_check() -> None:
    probe = ScriptedProbe({"http://127.0.0.1:8080/healthz": ConnectionRefusedError("refused")})
    gate, _, _ = _gate([HEALTHY], probe=probe, retries=2, url="http://127.0.0.1:8080/healthz")

    verdict = await gate.verify("0.2.0")

    assert not verdict.healthy and "refused" in verdict.detail
