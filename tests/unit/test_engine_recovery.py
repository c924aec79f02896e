"""A process killed right after any state is journaled: the next start ends the transaction in a
known state. One case per state, generated from the state list so a new state cannot be missed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from specivod.domain.states import ROLLBACK_PATH, State
from specivod.engine.journal import Journal
from tests.unit.engine_kit import Crash, Kit, crash_after, make_kit
from tests.unit.fakes import FakeBackups, FakeDeployment, FakeRelease, World


@dataclass(frozen=True)
class Scenario:
    target: str
    world: World
    missing: tuple[str, ...] = ()
    restore_fails: bool = False


def scenario_reaching(state: State) -> Scenario:
    if state in ROLLBACK_PATH:
        releases = {"0.2.3": FakeRelease(healthy=False, schema=3, data_change="converted")}
        return Scenario("0.2.3", World(releases=releases))
    if state is State.ROLLBACK_FAILED:
        releases = {"0.2.3": FakeRelease(healthy=False, schema=3)}
        return Scenario("0.2.3", World(releases=releases), restore_fails=True)
    if state is State.ABORTED:
        return Scenario("0.2.0", World(), missing=("0.2.0",))
    return Scenario("0.2.0", World())


EXPECTED_AFTER_RECOVERY = {
    State.PLANNED: State.ABORTED,
    State.BACKING_UP: State.ABORTED,
    State.PULLING: State.ABORTED,
    State.PINNED: State.ABORTED,
    State.STARTING: State.SUCCEEDED,
    State.VERIFYING: State.SUCCEEDED,
    State.SUCCEEDED: State.SUCCEEDED,
    State.ABORTED: State.ABORTED,
    State.ROLLING_BACK: State.ROLLED_BACK,
    State.STOPPING: State.ROLLED_BACK,
    State.SAFETY_BACKUP: State.ROLLED_BACK,
    State.RESTORING: State.ROLLED_BACK,
    State.RESTARTING: State.ROLLED_BACK,
    State.ROLLED_BACK: State.ROLLED_BACK,
    State.ROLLBACK_FAILED: State.ROLLBACK_FAILED,
}


def test_every_state_has_a_recovery_expectation() -> None:
    assert set(EXPECTED_AFTER_RECOVERY) == set(State)


def _kit(tmp_path: Path, scenario: Scenario, journal: Journal | None = None) -> Kit:
    world = scenario.world
    return make_kit(
        tmp_path,
        deployment=FakeDeployment(world, missing=scenario.missing),
        backups=FakeBackups(world, restore_fails=scenario.restore_fails),
        journal=journal,
    )


async def _killed_after(tmp_path: Path, state: State) -> tuple[Scenario, Kit]:
    """Run an upgrade that dies right after ``state`` is journaled; return the restarted kit."""
    scenario = scenario_reaching(state)
    first = _kit(tmp_path, scenario)
    crash_after(first.journal, state)
    with pytest.raises(Crash):
        await first.engine.upgrade(to=scenario.target)
    first.journal.close()
    return scenario, _kit(tmp_path, scenario, Journal(tmp_path))


@pytest.mark.parametrize("state", list(State), ids=lambda state: state.name)
async def test_killed_after_state_is_journaled_recovers(tmp_path: Path, state: State) -> None:
    scenario, restarted = await _killed_after(tmp_path, state)

    await restarted.engine.recover()

    final = restarted.journal.latest()
    assert final is not None
    assert final.state is EXPECTED_AFTER_RECOVERY[state]
    assert restarted.journal.unfinished() is None
    world = scenario.world
    if final.state is State.SUCCEEDED:
        assert world.pinned == world.running == scenario.target
    elif final.state is not State.ROLLBACK_FAILED:
        assert world.pinned == world.running == "0.1.10"
        assert (world.schema, world.data) == (1, "original data")
    assert sum(call == f"pull {scenario.target}" for call in world.calls) <= 1
    assert sum(call.startswith("backup (before") for call in world.calls) <= 1
    assert sum(call.startswith("backup (state replaced") for call in world.calls) <= 1
    if final.restored:
        assert final.safety_backup_id is not None
        assert final.data_aside == "/srv/data.replaced-tx1"


@pytest.mark.parametrize("state", [State.PLANNED, State.BACKING_UP, State.PULLING, State.PINNED])
async def test_an_aborted_upgrade_can_be_run_again(tmp_path: Path, state: State) -> None:
    scenario, restarted = await _killed_after(tmp_path, state)

    result = await restarted.engine.upgrade(to=scenario.target)

    assert result.transaction.state is State.SUCCEEDED
    history = restarted.journal.history()
    assert [t.state for t in history] == [State.SUCCEEDED, State.ABORTED]
    assert scenario.world.pinned == scenario.world.running == scenario.target
