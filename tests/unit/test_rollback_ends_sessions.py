"""A rollback ends the database sessions the stopped app left before it reads the schema: a
migration statement whose client died with its container would otherwise commit after the read
(attack finding W3), leaving the old version on the failed release's schema."""

from __future__ import annotations

from pathlib import Path

from specivod.domain.errors import BackupError
from specivod.domain.states import State
from tests.unit.engine_kit import make_kit
from tests.unit.fakes import FakeBackups, FakeRelease, World


class LateMigration(FakeBackups):
    """A statement still running in the database: it commits (schema 3) right after the next
    schema read, unless its session was ended first (then it rolled back)."""

    def __init__(self, world: World, *, refuse: bool = False) -> None:
        super().__init__(world)
        self.running = True
        self.refuse = refuse

    async def end_other_sessions(self) -> list[str]:
        await super().end_other_sessions()
        if self.refuse:
            raise BackupError("permission denied to terminate process")
        self.running = False
        return ["4242 specivo (active)"]

    async def fingerprint(self) -> str:
        read = await super().fingerprint()
        if self.running and self.world.stopped:
            self.world.schema = 3
        return read


async def test_a_statement_left_running_is_ended_before_the_schema_is_read(tmp_path: Path) -> None:
    world = World(releases={"0.2.1": FakeRelease(healthy=False)})
    backups = LateMigration(world)
    kit = make_kit(tmp_path, world, backups=backups)

    result = await kit.engine.upgrade(to="0.2.1")

    assert result.transaction.state is State.ROLLED_BACK
    assert world.schema == 1, "the late statement committed after the schema was read"
    assert backups.sessions_ended_with_app_stopped == [True]
    assert any("ended database sessions" in line for line in kit.reports)


async def test_a_database_that_refuses_to_end_sessions_does_not_stop_the_rollback(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.1": FakeRelease(healthy=False)})
    kit = make_kit(tmp_path, world, backups=LateMigration(world, refuse=True))

    result = await kit.engine.upgrade(to="0.2.1")

    assert result.transaction.state is State.ROLLED_BACK
    assert world.running == "0.1.10"
    assert any("permission denied" in line for line in kit.reports)
