"""The health gate: what counts as healthy, and the budget it keeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import pytest

from specivod.domain.errors import DeploymentError
from specivod.domain.references import parse_reference
from specivod.engine.ports import HttpAnswer, ServiceState
from specivod.engine.smoke_steps import HttpRequest
from specivod.engine.verification import HealthGate
from specivod.settings import HealthSettings
from specivod.settings_smoke import SmokeCheck
from tests.unit.fakes import FakeClock

IMAGE = "127.0.0.1:5000/specivo/specivo"
HEALTHY = ServiceState("api", "c1", "running", "healthy", f"{IMAGE}:0.2.0", "t1")
STARTING = replace(HEALTHY, health="starting")
NO_HEALTHCHECK = replace(HEALTHY, health=None)


Script = Sequence[ServiceState | Exception]


class ScriptedDeployment:
    """Answers each ``service_state`` with the next state (or error) of that service's script;
    the last one repeats. ``api`` and every service in ``others`` are versioned."""

    def __init__(self, script: Script, others: dict[str, Script] | None = None) -> None:
        self.scripts = {"api": list(script), **{k: list(v) for k, v in (others or {}).items()}}
        self.asked_of = dict.fromkeys(self.scripts, 0)
        self.images_fail: Exception | None = None

    @property
    def asked(self) -> int:
        return self.asked_of["api"]

    async def versioned_images(self, version: str) -> dict[str, str]:
        if self.images_fail is not None:
            raise self.images_fail
        return {service: f"{IMAGE}:{version}" for service in self.scripts}

    async def service_state(self, service: str) -> ServiceState:
        script, asked = self.scripts[service], self.asked_of[service]
        answer = script[min(asked, len(script) - 1)]
        self.asked_of[service] += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


class ScriptedProbe:
    def __init__(self, answers: dict[str, HttpAnswer | OSError]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def request(self, method: str, url: str, timeout: float) -> HttpAnswer:
        self.asked.append(url)
        answer = self.answers[url]
        if isinstance(answer, OSError):
            raise answer
        return answer

    async def send(self, request: HttpRequest, timeout: float) -> HttpAnswer:
        return await self.request(request.method, request.url, timeout)


def _gate(
    script: Script,
    *,
    others: dict[str, Script] | None = None,
    probe: ScriptedProbe | None = None,
    retries: int = 5,
    **settings: object,
) -> tuple[HealthGate, ScriptedDeployment, FakeClock]:
    deployment = ScriptedDeployment(script, others)
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
    assert "failed smoke step 'version'" in verdict.detail
    assert "does not contain '\"0.2.0\"'" in verdict.detail

    probe.answers["http://127.0.0.1:8080/api/version"] = HttpAnswer(200, '{"version": "0.2.0"}')
    verdict = await gate.verify("0.2.0")

    assert verdict.healthy
    assert verdict.detail == "api healthy, health URL 2xx, smoke 'version' passed"


async def test_the_scenario_runs_once_after_health_passed_not_at_every_check() -> None:
    create = "http://127.0.0.1:8080/api/issues"
    probe = ScriptedProbe({create: HttpAnswer(500, "database busy")})
    smoke = SmokeCheck(name="open an issue", url=create, method="POST", expect_status=201)
    gate, deployment, _ = _gate([STARTING, STARTING, HEALTHY], probe=probe, smoke=[smoke])

    verdict = await gate.verify("0.2.0")

    assert not verdict.healthy
    assert deployment.asked == 3, "health is retried until it passes"
    assert probe.asked == [create], "the scenario is not retried"
    assert verdict.detail.startswith("failed smoke step 'open an issue': POST")


async def test_the_version_a_rollback_returns_to_is_not_failed_by_the_scenario() -> None:
    """It passed the scenario before the upgrade: failing it now says the scenario is wrong (a
    changed password file), and a healthy old version is a finished rollback, not a failed one."""
    create = "http://127.0.0.1:8080/api/issues"
    probe = ScriptedProbe({create: HttpAnswer(401, "bad password")})
    smoke = SmokeCheck(name="sign in", url=create, method="POST", expect_status=201)
    gate, _, _ = _gate([HEALTHY], probe=probe, smoke=[smoke])

    verdict = await gate.verify("0.2.0", "0.2.1", scenario_decides=False)
    decided = await gate.verify("0.2.0", "0.1.10")

    assert verdict.healthy and not decided.healthy
    assert "the smoke scenario fails on 0.2.0 too" in verdict.detail
    assert "failed smoke step 'sign in'" in verdict.detail
    assert probe.asked == [create, create]


async def test_an_unhealthy_release_never_runs_the_scenario() -> None:
    probe = ScriptedProbe({})
    smoke = SmokeCheck(name="open an issue", url="http://127.0.0.1:8080/api/issues")
    gate, _, _ = _gate([STARTING], probe=probe, retries=2, smoke=[smoke])

    verdict = await gate.verify("0.2.0")

    assert not verdict.healthy and "not healthy after 2 checks" in verdict.detail
    assert probe.asked == []


async def test_a_veto_after_health_stops_the_scenario_before_it_starts() -> None:
    probe = ScriptedProbe({})
    smoke = SmokeCheck(name="open an issue", url="http://127.0.0.1:8080/api/issues")
    gate, _, _ = _gate([HEALTHY], probe=probe, smoke=[smoke])
    calls: list[str] = []

    def veto(version: str) -> str | None:
        calls.append(version)
        return "SpecivoDown firing" if len(calls) > 1 else None

    gate.veto = veto

    verdict = await gate.verify("0.2.0")

    assert verdict.detail == "verification vetoed: SpecivoDown firing"
    assert probe.asked == []


async def test_an_unreachable_health_url_is_a_failed_check() -> None:
    probe = ScriptedProbe({"http://127.0.0.1:8080/healthz": ConnectionRefusedError("refused")})
    gate, _, _ = _gate([HEALTHY], probe=probe, retries=2, url="http://127.0.0.1:8080/healthz")

    verdict = await gate.verify("0.2.0")

    assert not verdict.healthy and "refused" in verdict.detail


def _worker(state: ServiceState) -> ServiceState:
    return replace(state, service="worker", container_id="w1")


async def test_a_second_versioned_service_that_never_gets_healthy_fails_the_gate_by_name() -> None:
    gate, deployment, _ = _gate(
        [HEALTHY], others={"worker": [_worker(replace(HEALTHY, health="unhealthy"))]}, retries=3
    )

    verdict = await gate.verify("0.2.0")

    assert not verdict.healthy
    assert "worker: running, health unhealthy" in verdict.detail
    assert "api" not in verdict.detail.split(":", 1)[1], "only the failing service is named"
    assert deployment.asked_of == {"api": 3, "worker": 3}


async def test_every_versioned_service_healthy_passes_and_each_is_named() -> None:
    gate, _, _ = _gate([HEALTHY], others={"worker": [_worker(NO_HEALTHCHECK)]})

    verdict = await gate.verify("0.2.0")

    assert verdict.healthy and verdict.attempts == 2
    assert verdict.detail == "api healthy, worker running, without restarts"


async def test_a_second_service_on_the_old_image_does_not_count() -> None:
    old_worker = _worker(replace(HEALTHY, image=f"{IMAGE}:0.1.10"))
    gate, _, _ = _gate([HEALTHY], others={"worker": [old_worker]}, retries=2)

    verdict = await gate.verify("0.2.0")

    assert not verdict.healthy
    assert f"worker runs {IMAGE}:0.1.10, not version 0.2.0" in verdict.detail


async def test_an_image_written_differently_but_the_same_counts() -> None:
    gate, deployment, _ = _gate([HEALTHY], others={"cache": [replace(HEALTHY, service="cache")]})
    deployment.scripts["cache"] = [replace(HEALTHY, service="cache", image="valkey")]

    async def images(version: str) -> dict[str, str]:
        return {"api": f"{IMAGE}:{version}", "cache": "docker.io/library/valkey:latest"}

    deployment.versioned_images = images  # type: ignore[method-assign]

    assert (await gate.verify("0.2.0")).healthy


async def test_not_knowing_the_versioned_services_is_a_failed_check() -> None:
    gate, deployment, _ = _gate([HEALTHY], retries=2)
    deployment.images_fail = DeploymentError("compose config: no such file")

    verdict = await gate.verify("0.2.0")

    assert not verdict.healthy and verdict.attempts == 2
    assert "cannot tell which services 0.2.0 pins: compose config" in verdict.detail
    assert deployment.asked == 0


class SomeVersioned(ScriptedDeployment):
    """Only the services named in ``images`` are versioned, each with its own image name."""

    def __init__(self, images: dict[str, str], scripts: dict[str, Script]) -> None:
        super().__init__(scripts.pop("api"), scripts)
        self.images = images

    async def versioned_images(self, version: str) -> dict[str, str]:
        return {service: f"{image}:{version}" for service, image in self.images.items()}


def _gate_on(deployment: ScriptedDeployment, **settings: object) -> HealthGate:
    health = HealthSettings.model_validate(
        {"retries": 3, "interval": timedelta(seconds=2), **settings}
    )
    return HealthGate(
        deployment,  # type: ignore[arg-type]
        ScriptedProbe({}),
        health,
        parse_reference(IMAGE),
        FakeClock(),
    )


async def test_a_versioned_service_of_another_repository_must_run_the_new_tag() -> None:
    ml = "127.0.0.1:5000/specivo/machine-learning"
    stale = ServiceState("ml", "c2", "running", "healthy", f"{ml}:0.1.10", "t1")
    deployment = SomeVersioned({"api": IMAGE, "ml": ml}, {"api": [HEALTHY], "ml": [stale]})

    verdict = await _gate_on(deployment).verify("0.2.0")

    assert not verdict.healthy
    assert f"ml runs {ml}:0.1.10, not version 0.2.0" in verdict.detail


async def test_a_health_service_outside_the_versioned_ones_is_held_to_the_registry_image() -> None:
    web = replace(HEALTHY, service="web", image=f"{IMAGE}:0.1.10")
    deployment = SomeVersioned({"api": IMAGE}, {"api": [HEALTHY], "web": [web]})

    verdict = await _gate_on(deployment, service="web").verify("0.2.0")

    assert not verdict.healthy
    assert "not version 0.2.0" in verdict.detail


def test_a_gate_for_smoke_commands_without_a_command_runner_is_refused_at_once() -> None:
    step = SmokeCheck(name="browser test", command=["smoke.sh"])

    with pytest.raises(ValueError, match="no command runner"):
        _gate([HEALTHY], smoke=[step])
