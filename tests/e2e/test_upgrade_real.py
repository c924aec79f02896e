"""The transactional upgrade on the real stack: the real CLI, Docker Engine, Compose v2,
registry and PostgreSQL, against a sandbox deployment with rows and files in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox.deployment import SandboxDeployment
from sandbox.releases import (
    BASELINE,
    HEALTHY_UPGRADE,
    MIGRATES_THEN_FAILS,
    NEVER_HEALTHY,
    SLOW,
    UNPULLABLE,
)
from tests.conftest import Specivod

pytestmark = pytest.mark.stack


def _last(specivod: Specivod) -> dict[str, object]:
    result = specivod("history", "--json")
    assert result.returncode == 0, result.stderr
    transactions: list[dict[str, object]] = json.loads(result.stdout)["transactions"]
    return transactions[0]


def _container(deployment: SandboxDeployment) -> tuple[object, object]:
    inspected = deployment.api_container()
    state = inspected["State"]
    assert isinstance(state, dict)
    return inspected["Id"], state["StartedAt"]


def test_healthy_release_is_installed(deployment: SandboxDeployment, specivod: Specivod) -> None:
    result = specivod("upgrade", "--now", "--to", HEALTHY_UPGRADE)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SPECIVO_VERSION={HEALTHY_UPGRADE}\n" in deployment.env_file.read_text()
    assert deployment.running_version() == HEALTHY_UPGRADE
    assert deployment.schema_version() == 2
    last = _last(specivod)
    assert (last["from"], last["to"], last["state"]) == (BASELINE, HEALTHY_UPGRADE, "succeeded")
    assert last["backup_id"]
    assert "succeeded" in result.stdout


def test_slow_release_passes_within_the_budget(
    deployment: SandboxDeployment, specivod: Specivod
) -> None:
    result = specivod("upgrade", "--now", "--to", SLOW)

    assert result.returncode == 0, result.stdout + result.stderr
    assert deployment.running_version() == SLOW


def test_never_healthy_release_is_rolled_back_without_restore(
    deployment: SandboxDeployment, specivod: Specivod
) -> None:
    env_before = deployment.env_file.read_bytes()
    rows_before = deployment.table_checksum()

    result = specivod("upgrade", "--now", "--to", NEVER_HEALTHY)

    assert result.returncode == 1, result.stdout + result.stderr
    last = _last(specivod)
    assert last["state"] == "rolled_back"
    assert last["restored"] is False and last["schema_changed"] is False
    assert deployment.env_file.read_bytes() == env_before
    assert deployment.running_version() == BASELINE
    assert deployment.api_container()["State"]["Health"]["Status"] == "healthy"  # type: ignore[index]
    assert deployment.table_checksum() == rows_before
    check = specivod("check", "--json")
    assert check.returncode == 0, check.stderr
    planned = json.loads(check.stdout)
    assert NEVER_HEALTHY in planned["candidates"] and planned["target"] != NEVER_HEALTHY
    assert f"skipped: {NEVER_HEALTHY} (failed and was rolled back" in planned["reason"]


def test_release_that_migrates_then_fails_is_restored_exactly(
    deployment: SandboxDeployment, specivod: Specivod
) -> None:
    rows_before = deployment.table_checksum()
    files_before = deployment.data_hashes()

    result = specivod("upgrade", "--now", "--to", MIGRATES_THEN_FAILS)

    assert result.returncode == 1, result.stdout + result.stderr
    last = _last(specivod)
    assert last["state"] == "rolled_back"
    assert last["restored"] is True and last["schema_changed"] is True
    assert deployment.running_version() == BASELINE
    assert deployment.schema_version() == 1
    assert deployment.table_checksum() == rows_before
    assert deployment.data_hashes() == files_before
    aside = Path(str(last["data_aside"]))
    assert aside.is_dir() and aside != deployment.data_dir
    assert "written by 0.2.3" in (aside / "FORMAT").read_text()


def test_unpullable_release_aborts_without_touching_the_app(
    deployment: SandboxDeployment, specivod: Specivod
) -> None:
    env_before = deployment.env_file.read_bytes()
    container_before = _container(deployment)

    result = specivod("upgrade", "--now", "--to", UNPULLABLE)

    assert result.returncode == 1, result.stdout + result.stderr
    last = _last(specivod)
    assert last["state"] == "aborted"
    assert "pull" in str(last["reason"])
    assert deployment.env_file.read_bytes() == env_before
    assert _container(deployment) == container_before
    assert deployment.running_version() == BASELINE


def test_manual_rollback_after_a_migrating_upgrade_restores_the_data(
    deployment: SandboxDeployment, specivod: Specivod
) -> None:
    rows_before = deployment.table_checksum()
    assert specivod("upgrade", "--now", "--to", HEALTHY_UPGRADE).returncode == 0

    result = specivod("rollback")

    assert result.returncode == 0, result.stdout + result.stderr
    last = _last(specivod)
    assert (last["state"], last["restored"]) == ("rolled_back", True)
    assert deployment.running_version() == BASELINE
    assert deployment.schema_version() == 1
    assert deployment.table_checksum() == rows_before
    assert "kept in backup" in result.stdout
    status = json.loads(specivod("status", "--json").stdout)
    assert status["deployed"] == BASELINE and status["state"] == "rolled_back"
