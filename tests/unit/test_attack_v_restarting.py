"""Attack review V (today's W2 fix: SAFETY_BACKUP stops the app "only if one runs", RESTORING
goes back to SAFETY_BACKUP when it finds it running): "runs" is Docker's status ``running``.
A release that crash-loops under ``restart: always`` spends its back-off in status
``restarting``, and dockerd starts it again a moment later: it is not stopped, and the safety
backup and the restore run under it. Fixed: a service running, restarting or paused is stopped
first (``ServiceState.active``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from specivod.domain.states import State
from specivod.engine.journal import Journal
from specivod.engine.ports import ServiceState
from tests.unit.engine_kit import Crash, crash_after, make_kit
from tests.unit.fakes import IMAGE, FakeDeployment, FakeRelease, World
from tests.unit.test_attack_w_resume import WatchedBackups

FAILED = "0.2.3"


class CrashLooping(FakeDeployment):
    """After the boot, dockerd keeps restarting the failed release (``restart: always``):
    whenever it is asked, the container is in its back-off (``restarting``) until a
    ``compose stop`` ends the loop."""

    async def service_state(self, service: str) -> ServiceState:
        world = self.world
        if world.stopped or world.running != FAILED:
            return await super().service_state(service)
        return ServiceState(
            service=service,
            container_id=f"c{world.container_serial}",
            status="restarting",
            health=None,
            image=f"{IMAGE}:{world.running}",
            started_at=str(world.container_serial),
            restart_count=7,
        )


@pytest.mark.parametrize("killed_in", [State.SAFETY_BACKUP, State.RESTORING])
async def test_a_resumed_rollback_stops_a_crash_looping_release_first(
    tmp_path: Path, killed_in: State
) -> None:
    world = World(releases={FAILED: FakeRelease(healthy=False, schema=3)})
    first = make_kit(tmp_path, deployment=FakeDeployment(world), backups=WatchedBackups(world))
    crash_after(first.journal, killed_in)
    with pytest.raises(Crash):
        await first.engine.upgrade(to=FAILED)
    first.journal.close()
    assert world.stopped and world.running == FAILED

    world.stopped = False  # the host boots: dockerd restarts the api, which keeps crashing
    backups = WatchedBackups(world)
    second = make_kit(
        tmp_path, deployment=CrashLooping(world), backups=backups, journal=Journal(tmp_path)
    )
    recovered = await second.engine.recover()

    assert recovered is not None and recovered.state is State.ROLLED_BACK
    assert backups.app_stopped_at, "neither a safety backup nor a restore ran"
    assert all(stopped for _, stopped in backups.app_stopped_at), backups.app_stopped_at
