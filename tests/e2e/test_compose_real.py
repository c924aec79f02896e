"""The compose adapter against the real Docker Engine, Compose v2 and registry."""

from __future__ import annotations

import asyncio
import time

import pytest

from sandbox.deployment import SandboxDeployment
from sandbox.releases import BASELINE, HEALTHY_UPGRADE, MISSING, UNPULLABLE
from specivod.adapters.compose import ComposeDeployment
from specivod.domain.errors import DeploymentError
from specivod.engine.ports import ServiceState
from specivod.settings import DeploymentSettings

pytestmark = pytest.mark.stack


def _adapter(deployment: SandboxDeployment) -> ComposeDeployment:
    return ComposeDeployment(DeploymentSettings(project_dir=deployment.directory), environ={})


async def _wait_healthy(adapter: ComposeDeployment, service: str, seconds: float) -> ServiceState:
    deadline = time.monotonic() + seconds
    state = await adapter.service_state(service)
    while not state.healthy and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        state = await adapter.service_state(service)
    return state


async def test_pin_pull_up_replaces_the_running_image(deployment: SandboxDeployment) -> None:
    adapter = _adapter(deployment)
    before = await adapter.service_state("api")
    assert before.healthy and before.image.endswith(f":{BASELINE}")

    await adapter.pull(HEALTHY_UPGRADE)
    adapter.pin(HEALTHY_UPGRADE)
    await adapter.up(HEALTHY_UPGRADE)
    after = await _wait_healthy(adapter, "api", 30)

    assert after.healthy, after.describe()
    assert after.image.endswith(f":{HEALTHY_UPGRADE}")
    assert after.container_id != before.container_id
    assert deployment.running_version() == HEALTHY_UPGRADE
    assert adapter.pinned_version() == HEALTHY_UPGRADE


@pytest.mark.parametrize("version", [MISSING, UNPULLABLE])
async def test_failed_pull_touches_neither_env_nor_container(
    deployment: SandboxDeployment, version: str
) -> None:
    adapter = _adapter(deployment)
    env_before = deployment.env_file.read_bytes()
    before = await adapter.service_state("api")

    with pytest.raises(DeploymentError, match="pull"):
        await adapter.pull(version)

    after = await adapter.service_state("api")
    assert deployment.env_file.read_bytes() == env_before
    assert (after.container_id, after.started_at) == (before.container_id, before.started_at)
    assert after.healthy


async def test_pin_keeps_every_other_byte_of_env(deployment: SandboxDeployment) -> None:
    adapter = _adapter(deployment)
    original = deployment.env_file.read_bytes()
    mode = deployment.env_file.stat().st_mode

    adapter.pin(HEALTHY_UPGRADE)

    rewritten = deployment.env_file.read_bytes()
    assert rewritten == original.replace(
        f"SPECIVO_VERSION={BASELINE}\n".encode(), f"SPECIVO_VERSION={HEALTHY_UPGRADE}\n".encode()
    )
    assert rewritten != original
    assert deployment.env_file.stat().st_mode == mode
    assert sorted(p.name for p in deployment.directory.iterdir()) == [
        ".env",
        "data",
        "docker-compose.yml",
    ]
