"""The smoke scenario on the real stack: the example configuration's own scenario (sign in, open
an issue, search for it, delete it) against the sandbox's fake Specivo API, through the real CLI,
Docker Engine, Compose v2, registry and PostgreSQL; and smoke commands as real processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox.config import specivod_config
from sandbox.deployment import SandboxDeployment
from sandbox.releases import BASELINE, HEALTHY_UPGRADE, SEARCH_BROKEN, SMOKE_PASSWORD
from sandbox.smoke import smoke_health
from specivod.adapters.clock import SystemClock
from specivod.adapters.compose import ComposeDeployment
from specivod.adapters.http_probe import AiohttpProbe
from specivod.adapters.smoke_command import SubprocessCommands
from specivod.domain.references import parse_reference
from specivod.engine.verification import HealthGate, Verdict
from specivod.settings import DeploymentSettings, HealthSettings
from tests.conftest import Specivod, SpecivodFactory

pytestmark = pytest.mark.stack

SMOKE_ISSUES = "SELECT count(*) FROM issues WHERE title LIKE 'specivod smoke test %'"
POLICY = {"range": ">=0.1.0 <0.2.9", "prerelease": True, "step": "minor"}
"""Holds ``SEARCH_BROKEN``; no other test's pre-release range holds a 0.2.x pre-release."""


class Outputs:
    """Every text the CLI printed, to search for secrets afterwards."""

    def __init__(self, specivod: Specivod) -> None:
        self.specivod = specivod
        self.texts: list[str] = []

    def __call__(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        result = self.specivod(*arguments)
        self.texts += [result.stdout, result.stderr]
        return result

    def json(self, *arguments: str) -> dict[str, Any]:
        result = self(*arguments, "--json")
        assert result.returncode == 0, result.stderr
        document: dict[str, Any] = json.loads(result.stdout)
        return document


def _sessions(deployment: SandboxDeployment) -> list[str]:
    """The tokens the running api handed out."""
    listed = deployment.compose("exec", "-T", "api", "ls", "/tmp/specivo-sessions", check=False)
    return listed.stdout.split()


def test_the_example_scenario_passes_and_a_release_whose_search_is_broken_is_rolled_back(
    deployment: SandboxDeployment, specivod_with: SpecivodFactory, tmp_path: Path
) -> None:
    cli = Outputs(specivod_with(health=smoke_health(deployment, tmp_path), policy=POLICY))

    good = cli("upgrade", "--now", "--to", HEALTHY_UPGRADE)

    assert good.returncode == 0, good.stdout + good.stderr
    assert "smoke 'sign in', 'open an issue', 'search for it', 'delete it' passed" in good.stdout
    assert deployment.psql(SMOKE_ISSUES) == "0", "the scenario deleted its issue"
    tokens = _sessions(deployment)
    assert tokens, "the scenario signed in"

    broken = cli("upgrade", "--now", "--to", SEARCH_BROKEN)

    assert broken.returncode == 1, broken.stdout + broken.stderr
    last = cli.json("history")["transactions"][0]
    assert (last["to"], last["state"], last["schema_changed"]) == (
        SEARCH_BROKEN,
        "rolled_back",
        False,
    )
    reason = str(last["reason"])
    assert "failed smoke step 'search for it': GET http://127.0.0.1:" in reason, reason
    assert "the answer has nothing at issues[0].id" in reason
    assert "cleanup 'delete it' passed" in reason, "the cleanup ran after the failed step"
    assert "failed smoke step 'search for it'" in cli("history").stdout
    assert deployment.running_version() == HEALTHY_UPGRADE
    assert deployment.psql(SMOKE_ISSUES) == "0"
    tokens += _sessions(deployment)

    cli.json("status")
    cli("config", "show")
    journal = [path.read_bytes() for path in (tmp_path / "state").rglob("*") if path.is_file()]
    for secret in (SMOKE_PASSWORD, *tokens):
        for text in cli.texts:
            assert secret not in text
        for content in journal:
            assert secret.encode() not in content


async def _verify(
    deployment: SandboxDeployment, tmp_path: Path, *steps: dict[str, Any]
) -> tuple[Verdict, float]:
    config = specivod_config(deployment, tmp_path)
    quick = config["health"]
    assert isinstance(quick, dict)
    scenario = {**smoke_health(deployment, tmp_path), "smoke": list(steps)}
    health = HealthSettings.model_validate({**quick, **scenario})
    compose = ComposeDeployment(DeploymentSettings.model_validate(config["deployment"]))
    try:
        async with AiohttpProbe() as probe:
            repository = parse_reference(deployment.images.app)
            gate = HealthGate(
                compose, probe, health, repository, SystemClock(), commands=SubprocessCommands()
            )
            started = time.monotonic()
            verdict = await gate.verify(BASELINE, "0.1.9")
            return verdict, time.monotonic() - started
    finally:
        compose.close()


async def test_a_smoke_command_that_times_out_fails_the_verification_and_is_killed(
    deployment: SandboxDeployment, tmp_path: Path
) -> None:
    marker = f"{tmp_path}/still-running"
    hangs = {
        "name": "hangs",
        "command": ["sh", "-c", f"(sleep 3; touch {marker}) & sleep 30"],
        "timeout": "1s",
    }

    verdict, seconds = await _verify(deployment, tmp_path, hangs)

    assert not verdict.healthy
    assert verdict.detail == (
        "failed smoke step 'hangs': command `sh -c '(sleep 3; touch "
        f"{marker}) & sleep 30'`: did not finish within 1s (killed)"
    )
    assert seconds < 10
    await asyncio.sleep(4)
    still_running = await asyncio.to_thread(Path(marker).exists)
    assert not still_running, "the command's whole process group was killed"


async def test_a_smoke_command_gets_the_versions_and_its_failure_is_redacted(
    deployment: SandboxDeployment, tmp_path: Path
) -> None:
    expected = f"{BASELINE} 0.1.9 http://127.0.0.1:{deployment.api_port}/cgi-bin"
    checks_env = {
        "name": "environment",
        "command": [
            "sh",
            "-c",
            'test "$SPECIVOD_TARGET_VERSION $SPECIVOD_FROM_VERSION $SPECIVOD_BASE_URL" = '
            f'"{expected}"',
        ],
    }
    echoes = {
        "name": "browser test",
        "command": ["sh", "-c", 'echo "step 1 ok"; echo "login with $PW refused" >&2; exit 3'],
        "env": {"PW": "{password}"},
    }

    verdict, _ = await _verify(deployment, tmp_path, checks_env, echoes)

    assert not verdict.healthy
    assert verdict.detail.startswith("failed smoke step 'browser test': command `sh -c")
    assert verdict.detail.endswith("`: exited with 3: step 1 ok / login with ******** refused")
    assert SMOKE_PASSWORD not in verdict.detail
