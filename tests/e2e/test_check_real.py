"""``specivod check`` against the real sandbox registry and deployment."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from sandbox.deployment import SandboxDeployment
from sandbox.releases import BASELINE, RELEASES
from tests.conftest import SpecivodFactory
from tests.support.ports import free_port

pytestmark = pytest.mark.stack


def test_check_reports_deployed_candidates_target_and_window(
    deployment: SandboxDeployment, specivod_with: SpecivodFactory
) -> None:
    every_day = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
    specivod = specivod_with(window=[{**every_day, "start": "00:00", "end": "00:00"}])

    result = specivod("check", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["deployed"] == BASELINE
    assert report["candidates"] == ["0.1.11", "0.2.0", "0.2.1", "0.2.2", "0.2.3", "0.2.4"]
    assert report["target"] == "0.2.4"
    assert report["latest"] == "0.3.0-rc.1"
    assert {r.version for r in RELEASES} >= set(report["candidates"])
    assert report["window_open"] is True
    assert datetime.fromisoformat(report["next_window"]) > datetime.now().astimezone()


def test_check_respects_range_and_prerelease(
    deployment: SandboxDeployment, specivod_with: SpecivodFactory
) -> None:
    specivod = specivod_with(policy={"range": "~0.1", "prerelease": False, "step": "minor"})

    report = json.loads(specivod("check", "--json").stdout)

    assert report["candidates"] == ["0.1.11"]
    assert report["target"] == "0.1.11"
    assert report["window_open"] is False and report["next_window"] is None


def test_check_fails_in_one_line_when_the_registry_is_down(
    deployment: SandboxDeployment, specivod_with: SpecivodFactory
) -> None:
    dead = f"127.0.0.1:{free_port()}/specivo/specivo"
    specivod = specivod_with(registry={"image": dead, "attempts": 1, "timeout": "2s"})

    result = specivod("check", "--json")

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("specivod: "), result.stderr
    assert dead.split("/", maxsplit=1)[0] in lines[0]


def test_a_pin_that_is_not_a_release_is_a_problem_for_check_and_upgrade(
    deployment: SandboxDeployment, specivod_with: SpecivodFactory
) -> None:
    env = deployment.env_file.read_text()
    deployment.env_file.write_text(
        env.replace(f"SPECIVO_VERSION={BASELINE}\n", "SPECIVO_VERSION=latest\n")
    )
    before = deployment.env_file.read_bytes()
    specivod = specivod_with()

    checked = specivod("check", "--json")
    upgraded = specivod("upgrade", "--now")

    assert checked.returncode == 1, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["deployed"] == "latest" and report["target"] is None
    assert "not a semver release" in report["problem"]
    assert upgraded.returncode == 1, upgraded.stdout + upgraded.stderr
    assert "not a semver release" in upgraded.stdout
    assert "--to VERSION --force" in upgraded.stdout
    assert deployment.env_file.read_bytes() == before
