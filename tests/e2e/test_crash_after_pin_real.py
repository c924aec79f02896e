"""SIGKILL right after the PINNED step rewrote ``.env`` to the target, before STARTING is journaled,
on the real stack. If a boot then runs ``docker compose up -d``, the target starts and migrates:
``recover`` rolls it back and restores the data. With no such boot, ``recover`` aborts and puts
``.env`` back under the untouched baseline (unit twin: tests/unit/test_crash_after_pin.py)."""

from __future__ import annotations

import json
import signal
import time

import pytest

from sandbox.deployment import SandboxDeployment
from sandbox.releases import BASELINE, MIGRATES_THEN_FAILS
from tests.conftest import Specivod
from tests.e2e.crash_runner import AFTER_PIN

pytestmark = pytest.mark.stack

BOOT_BUDGET = 60.0
"""Seconds the booted target may take to migrate and convert the data dir."""


def _history(specivod: Specivod) -> list[dict[str, object]]:
    result = specivod("history", "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["transactions"])


def _container(deployment: SandboxDeployment) -> tuple[object, object]:
    inspected = deployment.api_container()
    state = inspected["State"]
    assert isinstance(state, dict)
    return inspected["Id"], state["StartedAt"]


def _killed_after_pin(deployment: SandboxDeployment, specivod: Specivod) -> None:
    crashed = specivod("upgrade", "--now", "--to", MIGRATES_THEN_FAILS, crash_after=AFTER_PIN)
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert [t["state"] for t in _history(specivod)] == ["pinned"]
    assert f"SPECIVO_VERSION={MIGRATES_THEN_FAILS}\n" in deployment.env_file.read_text()
    assert deployment.running_version() == BASELINE


def _boot(deployment: SandboxDeployment) -> None:
    """The operator's boot unit: ``docker compose up -d`` with ``.env`` pinning the target; wait
    until the target has migrated the schema and rewritten the data dir."""
    deployment.compose("up", "-d")
    deadline = time.monotonic() + BOOT_BUDGET
    while time.monotonic() < deadline:
        converted = (deployment.data_dir / "FORMAT").read_text().startswith("format 3")
        if converted and deployment.running_version() == MIGRATES_THEN_FAILS:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(deployment.compose("logs", "--no-color", check=False).stdout)
    assert deployment.schema_version() == 3


def test_a_target_the_boot_started_is_rolled_back_and_restored(
    deployment: SandboxDeployment, specivod: Specivod
) -> None:
    rows_before, files_before = deployment.table_checksum(), deployment.data_hashes()
    env_before = deployment.env_file.read_bytes()
    _killed_after_pin(deployment, specivod)
    _boot(deployment)
    assert deployment.data_hashes() != files_before

    recovered = specivod("recover")

    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    transactions = _history(specivod)
    assert len(transactions) == 1, "the crashed transaction must not be run twice"
    last = transactions[0]
    assert (last["state"], last["restored"]) == ("rolled_back", True), last
    assert deployment.running_version() == BASELINE
    health = deployment.api_container()["State"]["Health"]["Status"]  # type: ignore[index]
    assert health == "healthy"
    assert deployment.env_file.read_bytes() == env_before
    assert deployment.schema_version() == 1
    assert deployment.table_checksum() == rows_before
    assert deployment.data_hashes() == files_before


def test_with_no_boot_the_upgrade_is_aborted_under_the_untouched_baseline(
    deployment: SandboxDeployment, specivod: Specivod
) -> None:
    rows_before, files_before = deployment.table_checksum(), deployment.data_hashes()
    env_before = deployment.env_file.read_bytes()
    container_before = _container(deployment)
    _killed_after_pin(deployment, specivod)

    recovered = specivod("recover")

    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    transactions = _history(specivod)
    assert len(transactions) == 1
    assert (transactions[0]["state"], transactions[0]["restored"]) == ("aborted", False)
    assert deployment.env_file.read_bytes() == env_before
    assert _container(deployment) == container_before, "the running baseline was not touched"
    assert deployment.running_version() == BASELINE
    assert deployment.table_checksum() == rows_before
    assert deployment.data_hashes() == files_before
