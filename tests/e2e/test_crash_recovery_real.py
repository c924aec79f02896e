"""SIGKILL right after each state is journaled, on the real stack; then start again.

One test per state, generated from the state list, so a new state cannot be missed. After the
restart the transaction is finished (never repeated), the app is healthy, the backup is valid and
no row or file is lost.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field

import pytest

from sandbox.deployment import SandboxDeployment
from sandbox.releases import BASELINE, HEALTHY_UPGRADE, MIGRATES_THEN_FAILS, UNPULLABLE
from specivod.domain.states import BEFORE_START, ROLLBACK_PATH, State
from tests.conftest import Specivod, SpecivodFactory

pytestmark = pytest.mark.stack


@dataclass(frozen=True)
class Scenario:
    target: str
    after_recovery: State
    config: dict[str, dict[str, object]] = field(default_factory=dict)


def scenario_for(state: State) -> Scenario:
    if state in BEFORE_START:
        return Scenario(HEALTHY_UPGRADE, State.ABORTED)
    if state in (State.STARTING, State.VERIFYING, State.SUCCEEDED):
        return Scenario(HEALTHY_UPGRADE, State.SUCCEEDED)
    if state is State.ABORTED:
        return Scenario(UNPULLABLE, State.ABORTED)
    if state in ROLLBACK_PATH:
        return Scenario(MIGRATES_THEN_FAILS, State.ROLLED_BACK)
    if state is State.ROLLBACK_FAILED:
        # A fingerprint that cannot see the migration: the rollback skips the restore and the old
        # release refuses the newer schema.
        return Scenario(
            MIGRATES_THEN_FAILS,
            State.ROLLBACK_FAILED,
            {"backup": {"fingerprint_query": "SELECT 1"}},
        )
    raise AssertionError(f"no crash scenario for {state}")


def _transactions(specivod: Specivod) -> list[dict[str, object]]:
    result = specivod("history", "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["transactions"])


def _backup_valid(specivod: Specivod, backup_id: object) -> bool:
    listed = json.loads(specivod("backups", "--json").stdout)["backups"]
    return any(b["id"] == backup_id and b["valid"] for b in listed)


@pytest.mark.parametrize("state", list(State), ids=lambda state: state.name)
def test_sigkill_after_state_then_restart(
    state: State, deployment: SandboxDeployment, specivod_with: SpecivodFactory
) -> None:
    scenario = scenario_for(state)
    specivod = specivod_with(**scenario.config)
    rows_before = deployment.table_checksum()
    files_before = deployment.data_hashes()

    crashed = specivod("upgrade", "--now", "--to", scenario.target, crash_after=state.name)
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr

    recovered = specivod("recover")
    transactions = _transactions(specivod)
    assert len(transactions) == 1, "the crashed transaction must not be run twice"
    first = transactions[0]
    assert first["state"] == scenario.after_recovery.value, recovered.stdout + recovered.stderr
    if state not in (State.PLANNED, State.BACKING_UP):
        assert _backup_valid(specivod, first["backup_id"])
    listed = json.loads(specivod("backups", "--json").stdout)["backups"]
    assert all(backup["valid"] for backup in listed), "a partial backup must never be listed"

    if scenario.after_recovery is State.ROLLBACK_FAILED:
        assert recovered.returncode == 4
        assert specivod("status").returncode == 4
        refused = specivod("upgrade", "--now", "--to", HEALTHY_UPGRADE)
        assert refused.returncode == 4 and "ROLLBACK_FAILED" in refused.stdout
        restored = specivod("restore", str(first["backup_id"]))
        assert restored.returncode == 0, restored.stdout + restored.stderr
    else:
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    if scenario.after_recovery is State.ABORTED and scenario.target == HEALTHY_UPGRADE:
        again = specivod("upgrade", "--now", "--to", HEALTHY_UPGRADE)
        assert again.returncode == 0, again.stdout + again.stderr
        assert _transactions(specivod)[0]["state"] == "succeeded"

    final = _transactions(specivod)[0]
    health = deployment.api_container()["State"]["Health"]["Status"]  # type: ignore[index]
    assert health == "healthy"
    if final["state"] == "succeeded":
        assert deployment.running_version() == HEALTHY_UPGRADE
    else:
        assert deployment.running_version() == BASELINE
        assert deployment.table_checksum() == rows_before
        assert deployment.data_hashes() == files_before
