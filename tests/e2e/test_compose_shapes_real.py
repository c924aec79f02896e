"""Compose files shaped like real deployments, on the real Docker Engine, Compose v2 and registry:
an upgrade pulls and recreates only the services the version variable renders (``api`` and
``worker``), never the db pinned by digest (whose ``env_file: .env`` changes with the pin), a
local-only image or a sidecar on a floating tag; it leaves the operator's containers from other
compose files of the project alone; and every versioned service must be healthy."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.config import specivod_config, write_config
from sandbox.releases import BASELINE, WORKER_NEVER_HEALTHY
from sandbox.shapes import ShapedDeployment, create_shaped_deployment, move_sidecar_tag
from specivod.adapters.clock import SystemClock
from specivod.adapters.compose import ComposeDeployment
from specivod.adapters.http_probe import AiohttpProbe
from specivod.domain.references import parse_reference
from specivod.engine.ports import ServiceState
from specivod.engine.verification import HealthGate
from specivod.settings import DeploymentSettings, HealthSettings
from tests.conftest import Specivod, Stack

pytestmark = pytest.mark.stack

NEXT = "0.1.11"
UNVERSIONED = ("db", "cache", "sidecar")


@pytest.fixture
def shaped(stack: Stack, tmp_path: Path) -> Iterator[ShapedDeployment]:
    created = create_shaped_deployment(tmp_path, stack.engine.client, stack.images)
    try:
        yield created
    finally:
        created.deployment.down()


def _adapter(shaped: ShapedDeployment) -> ComposeDeployment:
    settings = DeploymentSettings(project_dir=shaped.deployment.directory)
    return ComposeDeployment(settings, environ={})


def _run(shaped: ShapedDeployment, service: str) -> tuple[object, ...]:
    """What changes when a container is recreated, restarted or moved to another image."""
    inspected = shaped.container(service)
    state = inspected["State"]
    assert isinstance(state, dict), f"{service} has no container"
    return inspected["Id"], state["StartedAt"], inspected["Image"], state["Status"]


def _inspect(thing: str, template: str) -> str:
    result = subprocess.run(
        ["docker", "inspect", "--format", template, thing],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or result.stderr.strip()


async def _wait_healthy(adapter: ComposeDeployment, service: str, seconds: float) -> ServiceState:
    deadline = time.monotonic() + seconds
    state = await adapter.service_state(service)
    while not state.healthy and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        state = await adapter.service_state(service)
    return state


async def test_an_upgrade_pulls_and_recreates_only_what_the_pin_changes(
    shaped: ShapedDeployment, stack: Stack, tmp_path: Path
) -> None:
    adapter = _adapter(shaped)
    before = {service: _run(shaped, service) for service in UNVERSIONED}
    orphan = shaped.start_orphan(tmp_path)
    move_sidecar_tag(stack.engine.client, shaped.images, generation=2)
    app = shaped.images.names.app

    assert await adapter.versioned_services(NEXT) == ["api", "worker"]
    await adapter.pull(NEXT)
    adapter.pin(NEXT)
    await adapter.up(NEXT)

    for service in ("api", "worker"):
        state = await _wait_healthy(adapter, service, 60)
        assert state.healthy, state.describe()
        assert state.image == f"{app}:{NEXT}"
    assert f"SPECIVO_VERSION={NEXT}\n" in shaped.deployment.env_file.read_text()
    assert {service: _run(shaped, service) for service in UNVERSIONED} == before, (
        "db (env_file: .env changed), the local-only cache and the sidecar keep their containers"
    )
    assert _inspect(shaped.images.sidecar, "{{.Id}}") == shaped.images.sidecar_first, (
        "the sidecar's floating tag was not pulled"
    )
    assert _inspect(orphan, "{{.State.Status}}") == "running", "the operator's container lives"


async def test_the_gate_fails_a_release_whose_worker_never_gets_healthy(
    shaped: ShapedDeployment, tmp_path: Path
) -> None:
    adapter = _adapter(shaped)
    health = HealthSettings.model_validate(specivod_config(shaped.deployment, tmp_path)["health"])
    await adapter.pull(WORKER_NEVER_HEALTHY)
    adapter.pin(WORKER_NEVER_HEALTHY)
    await adapter.up(WORKER_NEVER_HEALTHY)

    async with AiohttpProbe() as probe:
        repository = parse_reference(shaped.images.names.app)
        gate = HealthGate(adapter, probe, health, repository, SystemClock())
        verdict = await gate.verify(WORKER_NEVER_HEALTHY)

    api = await adapter.service_state("api")
    assert api.healthy, "the api of this release is healthy; only its worker is not"
    assert not verdict.healthy
    assert "worker: running, health unhealthy" in verdict.detail or (
        "worker: running, health starting" in verdict.detail
    ), verdict.detail


def test_the_cli_rolls_back_a_release_whose_worker_never_gets_healthy(
    shaped: ShapedDeployment, tmp_path: Path
) -> None:
    config = specivod_config(shaped.deployment, tmp_path)
    specivod = Specivod(write_config(tmp_path / "specivod.toml", config))
    env_before = shaped.deployment.env_file.read_bytes()

    result = specivod("upgrade", "--now", "--to", WORKER_NEVER_HEALTHY)

    assert result.returncode == 1, result.stdout + result.stderr
    history = specivod("history", "--json")
    last = json.loads(history.stdout)["transactions"][0]
    assert last["state"] == "rolled_back", last
    assert "worker" in str(last["reason"]), last["reason"]
    assert shaped.deployment.env_file.read_bytes() == env_before
    assert shaped.deployment.running_version() == BASELINE
    worker = shaped.container("worker")
    assert str(worker["Config"]["Image"]).endswith(f":{BASELINE}")  # type: ignore[index]


async def test_start_restarts_stopped_services_and_skips_one_without_a_container(
    shaped: ShapedDeployment,
) -> None:
    adapter = _adapter(shaped)
    shaped.deployment.compose("rm", "--stop", "--force", "sidecar")
    app_services = await adapter.app_services()
    assert sorted(app_services) == ["api", "cache", "sidecar", "worker"]
    await adapter.stop(app_services)
    cache_before = _run(shaped, "cache")

    await adapter.start(app_services)

    for service in ("api", "worker", "cache"):
        assert _run(shaped, service)[3] == "running", service
    assert _run(shaped, "cache")[0] == cache_before[0], "started again, not recreated"
    assert shaped.container("sidecar") == {}, "a service without a container stays without"
