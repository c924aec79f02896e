"""Hostile sequences on the real stack (the real CLI, Docker Engine, Compose v2, registry and
PostgreSQL): each test is one chain of events that loses data or leaves the wrong version
running. ``xfail(strict=True)`` marks a defect proven on the current code."""

from __future__ import annotations

import json
import signal

import pytest

from sandbox.deployment import SandboxDeployment
from sandbox.releases import BASELINE, MIGRATES_THEN_FAILS
from tests.conftest import Specivod

pytestmark = pytest.mark.stack


def _backups(specivod: Specivod) -> dict[str, dict[str, object]]:
    result = specivod("backups", "--json")
    assert result.returncode == 0, result.stderr
    return {str(b["id"]): b for b in json.loads(result.stdout)["backups"]}


def test_a_backup_taken_after_a_kill_in_restarting_records_the_version_of_its_data(
    deployment: SandboxDeployment, specivod: Specivod
) -> None:
    crashed = specivod("upgrade", "--now", "--to", MIGRATES_THEN_FAILS, crash_after="RESTARTING")
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert deployment.schema_version() == 1, "the database holds the baseline's schema again"

    # A careful operator takes a backup before touching anything: it is refused until the open
    # transaction is finished, since the pin may not match the data yet.
    refused = specivod("backup")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "specivod recover" in refused.stderr
    assert not any(b["reason"] == "manual" for b in _backups(specivod).values())
    recovered = specivod("recover")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    taken = specivod("backup")
    assert taken.returncode == 0, taken.stdout + taken.stderr
    manual = next(b for b in _backups(specivod).values() if b["reason"] == "manual")

    assert manual["version"] == BASELINE, (
        f"backup {manual['id']} holds {BASELINE}'s schema and data but says {manual['version']}: "
        f"`specivod restore {manual['id']}` would pin the failed {MIGRATES_THEN_FAILS}"
    )
    restored = specivod("restore", str(manual["id"]))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert deployment.running_version() == BASELINE
