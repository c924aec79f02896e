"""Operator controls: pause --until, skip/unskip, resolve — journaled, and honoured by the engine
and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from specivod.commands.controls import parse_until
from specivod.domain.states import State
from specivod.engine.controls import Action, Controls
from specivod.engine.service import NeedsAPerson
from tests.unit.engine_kit import make_kit
from tests.unit.fakes import FakeRelease, World
from tests.unit.test_engine_failures import EnvNotWritable

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def test_a_pause_until_a_time_ends_by_itself(tmp_path: Path) -> None:
    controls = Controls(tmp_path)
    controls.record(Action.PAUSE, NOW, until=NOW + timedelta(hours=6))

    assert controls.state(NOW + timedelta(hours=5)).paused
    assert controls.state(NOW + timedelta(hours=5)).paused_until == NOW + timedelta(hours=6)
    assert not controls.state(NOW + timedelta(hours=6)).paused


def test_resume_ends_an_open_ended_pause(tmp_path: Path) -> None:
    controls = Controls(tmp_path)
    controls.record(Action.PAUSE, NOW)
    assert controls.state(NOW + timedelta(days=365)).paused

    controls.record(Action.RESUME, NOW + timedelta(hours=1))

    assert not controls.state(NOW + timedelta(hours=1)).paused
    assert [row["action"] for row in controls.history()] == ["resume", "pause"]


def test_until_takes_a_time_or_a_duration() -> None:
    assert parse_until("6h", NOW) == NOW + timedelta(hours=6)
    assert parse_until("2026-12-01T06:00+01:00", NOW) == datetime(2026, 12, 1, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_until("tomorrow", NOW)


async def test_the_policy_target_never_picks_a_skipped_version(tmp_path: Path) -> None:
    kit = make_kit(tmp_path)  # deployed 0.1.10; the policy's target is 0.2.3
    Controls(tmp_path).record(Action.SKIP, NOW, version="0.2.3")

    result = await kit.engine.upgrade()

    assert result.transaction.to_version == "0.2.1"


async def test_unskip_makes_a_version_a_target_again(tmp_path: Path) -> None:
    kit = make_kit(tmp_path)
    Controls(tmp_path).record(Action.SKIP, NOW, version="0.2.3")
    Controls(tmp_path).record(Action.UNSKIP, NOW, version="0.2.3")

    result = await kit.engine.upgrade()

    assert result.transaction.to_version == "0.2.3"


async def test_upgrade_to_still_installs_a_skipped_version(tmp_path: Path) -> None:
    kit = make_kit(tmp_path)
    Controls(tmp_path).record(Action.SKIP, NOW, version="0.2.3")

    result = await kit.engine.upgrade(to="0.2.3")

    assert result.transaction.state is State.SUCCEEDED


async def test_resolve_lets_upgrades_through_after_a_failed_rollback(tmp_path: Path) -> None:
    world = World(releases={"0.2.1": FakeRelease(healthy=False)})
    broken = make_kit(tmp_path, deployment=EnvNotWritable(world, "0.1.10"))
    failed = (await broken.engine.upgrade(to="0.2.1")).transaction
    assert failed.state is State.ROLLBACK_FAILED
    world.pinned = world.running = "0.1.10"  # a person repaired the deployment
    kit = make_kit(tmp_path, world, journal=broken.journal)
    with pytest.raises(NeedsAPerson, match="specivod resolve"):
        await kit.engine.upgrade(to="0.2.0")

    Controls(tmp_path).record(Action.RESOLVE, NOW, transaction_id=failed.id)

    assert (await kit.engine.upgrade(to="0.2.0")).transaction.state is State.SUCCEEDED


async def test_resolving_an_older_failure_does_not_resolve_a_new_one(tmp_path: Path) -> None:
    world = World(releases={"0.2.1": FakeRelease(healthy=False)})
    kit = make_kit(tmp_path, deployment=EnvNotWritable(world, "0.1.10"))
    failed = (await kit.engine.upgrade(to="0.2.1")).transaction

    Controls(tmp_path).record(Action.RESOLVE, NOW, transaction_id=failed.id - 1)

    with pytest.raises(NeedsAPerson):
        await kit.engine.upgrade(to="0.2.0")
