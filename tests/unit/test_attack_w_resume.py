"""Attack review W (resume after a kill): a rollback resumed after the host, or the Docker Engine,
came back runs its steps that need the app stopped without stopping it again.
Fixed: the safety backup and the restore stop the app again first; a restore that finds it running
goes back to SAFETY_BACKUP.

What starts the app again between the kill and the resume: a container with ``restart: always``
is started by dockerd when dockerd (or the host) restarts, even after ``docker compose stop``;
and, until W1 was fixed, specivod's own engine-outage recovery started what stopped in the
second it last saw the engine working. The fake world below simply has the app running again
at resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from specivod.domain.errors import BackupError
from specivod.domain.states import State
from specivod.engine.journal import Journal
from tests.unit.engine_kit import Crash, Kit, crash_after, make_kit
from tests.unit.fakes import (
    FakeBackup,
    FakeBackups,
    FakeDeployment,
    FakeRelease,
    FakeRestore,
    World,
)


class WatchedBackups(FakeBackups):
    """Records whether the app was stopped each time a safety backup or a restore ran."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.app_stopped_at: list[tuple[str, bool]] = []

    async def create(
        self,
        *,
        version: str | None,
        reason: str,
        protect: Sequence[str] = (),
        keep_set_aside: Sequence[str] = (),
        safety: bool = False,
    ) -> FakeBackup:
        if safety:
            self.app_stopped_at.append(("safety backup", self.world.stopped))
        return await super().create(
            version=version,
            reason=reason,
            protect=protect,
            keep_set_aside=keep_set_aside,
            safety=safety,
        )

    async def restore(
        self, backup_id: str, *, verify: bool = True, data_aside: Path | None = None
    ) -> FakeRestore:
        self.app_stopped_at.append(("restore", self.world.stopped))
        return await super().restore(backup_id, verify=verify, data_aside=data_aside)


def _kit(
    tmp_path: Path, world: World, journal: Journal | None = None
) -> tuple[Kit, WatchedBackups]:
    backups = WatchedBackups(world)
    kit = make_kit(tmp_path, deployment=FakeDeployment(world), backups=backups, journal=journal)
    return kit, backups


@pytest.mark.parametrize("killed_in", [State.SAFETY_BACKUP, State.RESTORING])
async def test_a_resumed_rollback_restores_only_with_the_app_stopped(
    tmp_path: Path, killed_in: State
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3)})
    first, _ = _kit(tmp_path, world)
    crash_after(first.journal, killed_in)
    with pytest.raises(Crash):
        await first.engine.upgrade(to="0.2.3")
    first.journal.close()
    assert world.stopped and world.running == "0.2.3"

    world.stopped = False  # the host boots: dockerd starts the api (restart: always) at 0.2.3
    second, backups = _kit(tmp_path, world, Journal(tmp_path))
    recovered = await second.engine.recover()

    assert recovered is not None and recovered.state is State.ROLLED_BACK
    assert backups.app_stopped_at, "neither a safety backup nor a restore ran"
    assert all(stopped for _, stopped in backups.app_stopped_at), backups.app_stopped_at


class OutageDeployment(FakeDeployment):
    """A deployment that saw the engine go away; when it is back the app services run again:
    dockerd started them by their ``restart: always`` policy (the compose adapter also did,
    before the fix of W1, for those stopped in the second it last saw the engine working)."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.outage = False

    async def recover_from_outage(self) -> str | None:
        if not self.outage:
            return None
        self.outage = False
        self.world.stopped = False
        return "the Docker Engine is back; started again what its restart stopped: api"


class OutageInSafetyBackup(WatchedBackups):
    def __init__(self, world: World, deployment: OutageDeployment) -> None:
        super().__init__(world)
        self.deployment = deployment
        self.failed_once = False

    async def create(
        self,
        *,
        version: str | None,
        reason: str,
        protect: Sequence[str] = (),
        keep_set_aside: Sequence[str] = (),
        safety: bool = False,
    ) -> FakeBackup:
        if safety and not self.failed_once:
            self.failed_once = True
            self.deployment.outage = True
            raise BackupError("pg_dump: cannot connect to the Docker daemon")
        return await super().create(
            version=version,
            reason=reason,
            protect=protect,
            keep_set_aside=keep_set_aside,
            safety=safety,
        )


async def test_a_step_run_again_after_an_outage_restores_only_with_the_app_stopped(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3)})
    deployment = OutageDeployment(world)
    backups = OutageInSafetyBackup(world, deployment)
    kit = make_kit(tmp_path, deployment=deployment, backups=backups)

    result = await kit.engine.upgrade(to="0.2.3")

    assert result.transaction.state is State.ROLLED_BACK
    assert backups.failed_once
    assert all(stopped for _, stopped in backups.app_stopped_at), backups.app_stopped_at
