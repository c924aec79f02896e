"""Attack review V (engine-outage recovery, today's W1 fix): an outage the adapter noticed but
no step consumed stays armed; a later, unrelated step failure then "recovers" from it and starts
what the rollback stopped on purpose. ``xfail(strict=True)`` proves a defect on the current code;
the marker goes with the fix.

Driven through the real ``ComposeDeployment`` on the fake compose command and fake inspect of
``test_attack_w_outage`` (the engine is "down" while a flag file exists).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from specivod.adapters import compose as compose_module
from tests.unit.test_attack_w_outage import FakeEngine, _deployment


@pytest.mark.xfail(
    strict=True,
    reason=(
        "finding V1: an outage seen by a compose call whose failure the engine swallows "
        "(ROLLING_BACK's ensure_images via _report_problem) leaves _unreachable_since armed; "
        "STOPPING then stops the app after it, and the next unrelated step failure's "
        "recover_from_outage starts the stopped (failed) release again"
    ),
)
async def test_an_outage_already_over_does_not_start_what_the_rollback_stopped_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine(tmp_path)
    monkeypatch.setattr(compose_module, "engine_problem", engine.problem)
    deployment = _deployment(tmp_path, engine)
    await deployment.services()  # the engine was seen working

    # ROLLING_BACK of a failed upgrade: ensure_images(previous) runs `compose pull --policy
    # missing` while dockerd restarts; _check_before_stopping reports the failure and goes on.
    engine.down.touch()
    pulled = await deployment.compose("pull", "--quiet", "--policy", "missing", "api", "worker")
    assert not pulled.ok
    engine.down.unlink()  # dockerd is back a moment later; nothing asks the adapter

    await asyncio.sleep(0.01)
    # STOPPING: the rollback stops the failed release; the engine answers, the stop succeeds.
    await deployment.stop(["api", "worker"])
    assert not engine.containers()["api"]["running"]

    # SAFETY_BACKUP (disk full), RESTORING (pg_restore error) or RESTARTING (previous image
    # missing — the pull above failed) then fails for a reason of its own; drive() asks
    # came_back() first, which calls:
    await deployment.recover_from_outage()

    assert engine.started() == [], "started the release the rollback had stopped"
    assert not engine.containers()["api"]["running"]
    assert not engine.containers()["worker"]["running"]
