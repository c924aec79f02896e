"""Rollbacks and restores on the real stack: what they save before they replace anything, what
they refuse to stop, and what they do after a crash. The real CLI, Docker Engine, Compose v2,
registry and PostgreSQL."""

from __future__ import annotations

import json
import signal
import tomllib
from pathlib import Path

import pytest

from sandbox.deployment import SandboxDeployment
from sandbox.releases import BASELINE, HEALTHY_UPGRADE, MIGRATES_THEN_FAILS, NEVER_HEALTHY
from tests.conftest import Specivod

pytestmark = pytest.mark.stack

PATCH_UPGRADE = "0.1.11"
MIGRATES_LATE = "0.2.3-late.1"


def _history(specivod: Specivod) -> list[dict[str, object]]:
    result = specivod("history", "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["transactions"])


def _backups(specivod: Specivod) -> dict[str, dict[str, object]]:
    result = specivod("backups", "--json")
    assert result.returncode == 0, result.stderr
    return {str(b["id"]): b for b in json.loads(result.stdout)["backups"]}


def _container(deployment: SandboxDeployment) -> tuple[object, object]:
    inspected = deployment.api_container()
    state = inspected["State"]
    assert isinstance(state, dict)
    return inspected["Id"], state["StartedAt"]


def test_an_automatic_restore_saves_the_state_it_replaces_first(
    deployment: SandboxDeployment, specivod: Specivod
) -> None:
    result = specivod("upgrade", "--now", "--to", MIGRATES_THEN_FAILS)

    assert result.returncode == 1, result.stdout + result.stderr
    last = _history(specivod)[0]
    assert (last["state"], last["restored"]) == ("rolled_back", True)
    safety = str(last["safety_backup_id"])
    backup = _backups(specivod)[safety]
    assert backup["valid"] and backup["version"] == MIGRATES_THEN_FAILS
    assert f"kept in backup {safety}" in result.stdout
    assert f"kept in backup {safety}" in specivod("status").stdout
    status = json.loads(specivod("status", "--json").stdout)
    steps = [step["state"] for step in status["transaction"]["steps"]]
    assert steps[-5:] == ["stopping", "safety_backup", "restoring", "restarting", "rolled_back"]
    assert Path(str(last["data_aside"])).is_dir()


def test_a_migration_that_commits_as_the_app_stops_is_still_restored(
    deployment: SandboxDeployment, specivod: Specivod
) -> None:
    """The release's migration outlives the health budget and commits only while its container
    is stopped: the schema is read after the stop, so old code never runs on the new schema."""
    rows_before, files_before = deployment.table_checksum(), deployment.data_hashes()
    assert deployment.schema_version() == 1

    result = specivod("upgrade", "--now", "--force", "--to", MIGRATES_LATE)

    assert result.returncode == 1, result.stdout + result.stderr
    last = _history(specivod)[0]
    assert (last["state"], last["restored"], last["schema_changed"]) == (
        "rolled_back",
        True,
        True,
    ), last
    assert deployment.running_version() == BASELINE
    assert deployment.schema_version() == 1
    assert deployment.table_checksum() == rows_before
    assert deployment.data_hashes() == files_before
    safety = _backups(specivod)[str(last["safety_backup_id"])]
    assert safety["valid"]


def test_rollback_after_a_killed_upgrade_undoes_that_upgrade_only(
    deployment: SandboxDeployment, specivod: Specivod
) -> None:
    assert specivod("upgrade", "--now", "--to", PATCH_UPGRADE).returncode == 0
    crashed = specivod("upgrade", "--now", "--to", NEVER_HEALTHY, crash_after="VERIFYING")
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr

    result = specivod("rollback")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "stopped there" in result.stdout
    assert deployment.running_version() == PATCH_UPGRADE
    kinds = [(t["kind"], t["to"], t["state"]) for t in _history(specivod)]
    assert kinds == [
        ("upgrade", NEVER_HEALTHY, "rolled_back"),
        ("upgrade", PATCH_UPGRADE, "succeeded"),
    ]


def test_a_manual_rollback_with_a_damaged_backup_leaves_the_app_serving(
    deployment: SandboxDeployment, specivod: Specivod
) -> None:
    assert specivod("upgrade", "--now", "--to", HEALTHY_UPGRADE).returncode == 0
    backup_id = str(_history(specivod)[0]["backup_id"])
    dump = _backup_dir(specivod, backup_id) / "database.dump"
    with dump.open("r+b") as damaged:
        damaged.seek(100)
        damaged.write(b"\0" * 64)
    before = _container(deployment)
    rows = deployment.table_checksum()

    result = specivod("rollback")

    assert result.returncode == 1, result.stdout + result.stderr
    last = _history(specivod)[0]
    assert (last["kind"], last["state"]) == ("rollback", "aborted")
    assert _container(deployment) == before, "the serving app must not be stopped"
    assert deployment.running_version() == HEALTHY_UPGRADE
    assert deployment.table_checksum() == rows


def test_restore_is_a_transaction_that_pins_the_backups_version(
    deployment: SandboxDeployment, specivod: Specivod
) -> None:
    rows_before, files_before = deployment.table_checksum(), deployment.data_hashes()
    assert specivod("upgrade", "--now", "--to", HEALTHY_UPGRADE).returncode == 0
    backup_id = str(_history(specivod)[0]["backup_id"])
    deployment.psql("INSERT INTO issues (title, body) VALUES ('written on 0.2.0', 'x')")

    result = specivod("restore", backup_id)

    assert result.returncode == 0, result.stdout + result.stderr
    last = _history(specivod)[0]
    assert (last["kind"], last["from"], last["to"]) == ("restore", HEALTHY_UPGRADE, BASELINE)
    assert last["state"] == "rolled_back" and last["restored"] is True
    assert f"SPECIVO_VERSION={BASELINE}\n" in deployment.env_file.read_text()
    assert deployment.running_version() == BASELINE
    assert deployment.schema_version() == 1
    assert deployment.table_checksum() == rows_before
    assert deployment.data_hashes() == files_before
    safety = _backups(specivod)[str(last["safety_backup_id"])]
    assert safety["valid"] and safety["version"] == HEALTHY_UPGRADE


def _backup_dir(specivod: Specivod, backup_id: str) -> Path:
    config = tomllib.loads(specivod.config.read_text())
    return Path(config["backup"]["dir"]) / backup_id
