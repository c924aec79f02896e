"""Tests that kill mutants of the rollback and outage code (``rollback_steps``, ``engine_outage``,
``transaction.resume`` and the failure paths) that the other unit tests let live: each pins one
safety rule — nothing restored while an app service runs, a rollback never starts a release that
was not serving, an outage restarts what it stopped and nothing else, earlier safety backups are
kept, PINNED with a started target rolls back, sessions end before the schema is read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from specivod.domain.errors import BackupError, DeploymentError
from specivod.domain.references import parse_reference
from specivod.domain.states import RestoreMode, State
from specivod.engine.engine_outage import finished_at, stopped_since
from specivod.engine.journal import Journal
from specivod.engine.ports import ServiceState
from specivod.engine.verification import HealthGate, Verdict
from specivod.settings import HealthSettings
from tests.unit.engine_kit import Crash, Kit, crash_after, make_kit
from tests.unit.fakes import (
    FakeBackup,
    FakeBackups,
    FakeDeployment,
    FakeRelease,
    UnusedProbe,
    World,
)
from tests.unit.test_crash_after_pin import killed_after_pin


async def test_a_rollback_journaled_without_serving_starts_the_app_services_again(
    tmp_path: Path,
) -> None:
    """A journal from a specivod that did not record ``serving``: a manual rollback that cannot
    take its safety backup starts the app services again (the deployment's list), and only
    aborts."""
    world = World(releases={"0.2.0": FakeRelease(schema=2)})
    backups = FakeBackups(world)
    first = make_kit(tmp_path, world, backups=backups)
    await first.engine.upgrade(to="0.2.0")
    crash_after(first.journal, State.SAFETY_BACKUP)
    with pytest.raises(Crash):
        await first.engine.rollback()
    killed = first.journal.unfinished()
    assert killed is not None and killed.state is State.SAFETY_BACKUP
    first.journal.record(killed, serving=None)
    first.journal.close()
    assert world.stopped

    backups.create_fails = True
    second = make_kit(tmp_path, world, backups=backups, journal=Journal(tmp_path))
    recovered = await second.engine.recover()

    assert recovered is not None and recovered.state is State.ABORTED
    assert world.calls[-1] == "start api"
    assert (world.pinned, world.running, world.stopped, world.schema) == (
        "0.2.0",
        "0.2.0",
        False,
        2,
    )


async def test_a_rollback_that_cannot_keep_the_state_starts_each_serving_service_again(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.0": FakeRelease(schema=2)})
    backups = FakeBackups(world)
    deployment = NamedServices(world, app_services=("api", "worker"))
    kit = make_kit(tmp_path, deployment=deployment, backups=backups)
    await kit.engine.upgrade(to="0.2.0")
    backups.create_fails = True

    rollback = (await kit.engine.rollback()).transaction

    assert rollback.state is State.ABORTED and rollback.serving == "api,worker"
    assert "pg_dump" in (rollback.reason or "")
    assert world.calls[-1] == "start api worker"
    assert "api, worker started again" in kit.reports[-1]


class OnlyApiAnswers(FakeDeployment):
    """The engine knows only the services by their name: any other is absent."""

    async def service_state(self, service: str) -> ServiceState:
        if service != "api":
            return ServiceState(service, None, "absent", None, "", "")
        return await super().service_state(service)


class ImagesUnknown(FakeDeployment):
    async def versioned_images(self, version: str) -> dict[str, str]:
        raise DeploymentError("docker compose config: the engine does not answer")


async def test_a_target_started_since_pinned_is_looked_up_by_its_service(tmp_path: Path) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=True, schema=3)})
    await killed_after_pin(tmp_path, world)
    booted = OnlyApiAnswers(world)
    await booted.up("0.2.3")

    second = make_kit(tmp_path, deployment=booted, journal=Journal(tmp_path))
    recovered = await second.engine.recover()

    assert recovered is not None and recovered.state is State.ROLLED_BACK
    assert (world.running, world.pinned, world.schema) == ("0.1.10", "0.1.10", 1)
    assert any("0.2.3 was started since" in line for line in second.reports)


async def test_a_target_that_cannot_be_looked_up_after_pinned_is_aborted_and_said(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=True, schema=3)})
    await killed_after_pin(tmp_path, world)

    second = make_kit(tmp_path, deployment=ImagesUnknown(world), journal=Journal(tmp_path))
    recovered = await second.engine.recover()

    assert recovered is not None and recovered.state is State.ABORTED
    assert any("cannot tell whether 0.2.3 was started" in line for line in second.reports)


def _exited(service: str, finished: str) -> ServiceState:
    return ServiceState(service, f"id-{service}", "exited", None, "", "", finished_at=finished)


def test_an_outage_restarts_what_stopped_after_the_engine_was_seen_and_until_it_was_back() -> None:
    """To the microsecond at both ends: stopped exactly when the engine was last seen working
    is not the outage's; stopped exactly when it was seen back is; later, on purpose."""
    since = datetime(2026, 11, 26, 16, 0, 0, 500_000, tzinfo=UTC)
    until = datetime(2026, 11, 26, 16, 0, 9, 250_000, tzinfo=UTC)
    states = [
        _exited("at-since", "2026-11-26T16:00:00.5Z"),
        _exited("just-after", "2026-11-26T16:00:00.500001Z"),
        _exited("at-until", "2026-11-26T16:00:09.25Z"),
        _exited("after-until", "2026-11-26T16:00:09.250001Z"),
        _exited("whole-second", "2026-11-26T16:00:05Z"),
    ]

    assert stopped_since(states, since, until) == ["just-after", "at-until", "whole-second"]
    assert stopped_since(states, since) == ["just-after", "at-until", "after-until", "whole-second"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T16:00:03.123456789Z", datetime(2026, 11, 26, 16, 0, 3, 123456, tzinfo=UTC)),
        ("2026-11-26T16:00:03.1Z", datetime(2026, 11, 26, 16, 0, 3, 100000, tzinfo=UTC)),
        ("2026-11-26T16:00:03Z", datetime(2026, 11, 26, 16, 0, 3, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", None),
        ("2026-11-26T16:00:03.1+01:00", None),
        ("2026-11-26T16:00:03.x1Z", None),
        ("", None),
    ],
)
def test_finished_at_reads_dockers_stamp(text: str, expected: datetime | None) -> None:
    assert finished_at(_exited("api", text)) == expected


@pytest.mark.parametrize(
    ("schema", "said"),
    [
        (3, "the schema changed; saving the state being replaced before restoring"),
        (None, "the schema is unchanged: image rollback only"),
    ],
)
async def test_the_rollback_says_why_it_restores_or_not(
    tmp_path: Path, schema: int | None, said: str
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=schema)})
    kit = make_kit(tmp_path, world)

    failed = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert failed.state is State.ROLLED_BACK
    assert any(said in line for line in kit.reports), kit.reports
    assert failed.earlier_safety_backups is None
    if schema is not None:
        assert failed.safety_backup_id == "b2"
        assert any(
            "the state being replaced is kept in backup b2; restoring backup b1, the replaced "
            "data dir goes to /srv/data.replaced-tx1" in line
            for line in kit.reports
        )


async def test_a_rollback_that_never_restores_says_so(tmp_path: Path) -> None:
    world = World(releases={"0.2.0": FakeRelease(schema=2)})
    kit = make_kit(tmp_path, world)
    await kit.engine.upgrade(to="0.2.0")

    rollback = (await kit.engine.rollback(restore=RestoreMode.NEVER)).transaction

    assert rollback.state is State.ROLLED_BACK and not rollback.restored
    assert any("image rollback only (restore never)" in line for line in kit.reports)
    assert "STOPPING: stopping the app services" in kit.reports


class BackupsThatFailTheCheck(FakeBackups):
    async def prepare_restore(self, backup_id: str) -> FakeBackup:
        self.world.calls.append(f"check backup {backup_id}")
        raise BackupError(f"backup {backup_id}: checksum mismatch")


async def test_a_failed_upgrade_whose_backup_fails_the_check_still_rolls_the_image_back(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False)})
    kit = make_kit(tmp_path, world, backups=BackupsThatFailTheCheck(world))

    failed = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert failed.state is State.ROLLED_BACK and not failed.restored
    assert (world.running, world.pinned) == ("0.1.10", "0.1.10")
    assert any(
        "going on with the rollback despite: backup b1: checksum mismatch" in line
        for line in kit.reports
    )


async def test_a_failed_upgrade_whose_previous_image_cannot_be_pulled_goes_on_and_says_so(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False)})
    kit = make_kit(tmp_path, deployment=FakeDeployment(world, missing=("0.1.10",)))

    failed = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert failed.state is State.ROLLED_BACK
    assert any(
        "going on with the rollback despite: pull 0.1.10: registry unreachable" in line
        for line in kit.reports
    )


class NamedServices(FakeDeployment):
    """Answers for its app services by name; any other name has no container."""

    async def service_state(self, service: str) -> ServiceState:
        if service not in self.app:
            return ServiceState(service, None, "absent", None, "", "")
        return await super().service_state(service)


class RestartedByTheEngine(NamedServices):
    """``restart: always`` under a flapping engine: every app service stopped runs again at
    once. Gives up after 20 stops, so a rollback that chases it forever fails the test."""

    def __init__(self, world: World) -> None:
        super().__init__(world, app_services=("api", "worker"))
        self.stops = 0

    async def stop(self, services: Sequence[str]) -> None:
        await super().stop(services)
        self.world.stopped = False
        self.stops += 1
        if self.stops > 20:
            raise DeploymentError("the test gave up: the rollback keeps stopping the app")


async def test_a_rollback_stops_chasing_an_app_the_engine_keeps_starting_after_three_backups(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3)})
    deployment = RestartedByTheEngine(world)
    backups = FakeBackups(world)
    kit = make_kit(tmp_path, deployment=deployment, backups=backups)

    failed = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert failed.state is State.ROLLBACK_FAILED
    assert "api, worker kept being started while the data was being restored" in (
        failed.reason or ""
    )
    assert backups.safety.count(True) == 3
    assert backups.restored == [] and world.schema == 3
    assert kit.steps(failed).count("SAFETY_BACKUP") == 3
    assert (failed.safety_backup_id, failed.earlier_safety_backups) == ("b4", "b2,b3")
    aside = "/srv/data.replaced-tx1"  # journaled by the first RESTORING: retention keeps it
    assert backups.kept_set_aside[1:] == [[], [aside], [aside]]
    assert any("api, worker ran again before the restore" in line for line in kit.reports)


class VersionedByRelease(FakeDeployment):
    """Only the previous release renders ``api`` from the version variable."""

    async def versioned_services(self, version: str) -> list[str]:
        return ["api"] if version == "0.1.10" else []


async def test_a_rollback_starts_with_start_only_the_services_up_did_not_recreate(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False)})
    deployment = VersionedByRelease(world, app_services=("api", "worker"))
    kit = make_kit(tmp_path, deployment=deployment)

    failed = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert failed.state is State.ROLLED_BACK
    assert world.calls[-2:] == ["up 0.1.10", "start worker"]


class RecordingGate(HealthGate):
    def __init__(self, kit: Kit) -> None:
        health = HealthSettings(retries=3, interval=timedelta(seconds=2))
        reference = parse_reference(kit.registry.reference)
        super().__init__(kit.deployment, UnusedProbe(), health, reference, kit.clock)
        self.asked: list[tuple[str, str | None, bool]] = []

    async def verify(
        self, version: str, from_version: str | None = None, *, scenario_decides: bool = True
    ) -> Verdict:
        self.asked.append((version, from_version, scenario_decides))
        return await super().verify(version, from_version, scenario_decides=scenario_decides)


async def test_the_version_a_rollback_returns_to_is_verified_without_the_scenario_deciding(
    tmp_path: Path,
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False)})
    kit = make_kit(tmp_path, world)
    gate = RecordingGate(kit)
    kit.engine.context.gate = gate

    failed = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert failed.state is State.ROLLED_BACK
    assert gate.asked[-1] == ("0.1.10", "0.2.3", False) and gate.asked[-1][2] is False
    assert kit.reports[-1].startswith("ROLLED_BACK: 0.1.10 is healthy: ")


async def test_a_previous_version_that_does_not_come_back_is_a_failed_rollback(
    tmp_path: Path,
) -> None:
    world = World(
        releases={"0.2.3": FakeRelease(healthy=False), "0.1.10": FakeRelease(healthy=False)}
    )
    kit = make_kit(tmp_path, world)

    failed = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert failed.state is State.ROLLBACK_FAILED
    assert "0.1.10 did not come back: " in (failed.reason or "")


class SessionsLeft(FakeBackups):
    async def end_other_sessions(self) -> list[str]:
        await super().end_other_sessions()
        return ["pid 7 (UPDATE issues)", "pid 9 (idle in transaction)"]


async def test_each_session_ended_before_the_schema_is_read_is_named(tmp_path: Path) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=False, schema=3)})
    backups = SessionsLeft(world)
    kit = make_kit(tmp_path, world, backups=backups)

    failed = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert failed.state is State.ROLLED_BACK and backups.sessions_ended_with_app_stopped == [True]
    assert any(
        "ended database sessions left after the stop: pid 7 (UPDATE issues); pid 9 (idle in "
        "transaction)" in line
        for line in kit.reports
    )


class WatchedNeverDown(FakeDeployment):
    """Watches the engine, which never went away: a failed step is a failed step."""

    def __init__(self, world: World) -> None:
        super().__init__(world, up_fails=True)
        self.asked = 0

    async def recover_from_outage(self) -> str | None:
        self.asked += 1
        return None


async def test_a_step_that_failed_without_an_outage_does_not_run_again(tmp_path: Path) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=True)})
    deployment = WatchedNeverDown(world)
    kit = make_kit(tmp_path, deployment=deployment)

    result = (await kit.engine.upgrade(to="0.2.3")).transaction

    assert result.state is State.ROLLBACK_FAILED  # the rollback's own ``up`` fails too
    assert world.calls.count("up 0.2.3") == 1 and world.calls.count("up 0.1.10") == 1
    assert deployment.asked == 2
    assert not any("again" in line for line in kit.reports), kit.reports


class InspectionFailsUnder(FakeDeployment):
    async def service_state(self, service: str) -> ServiceState:
        if self.world.running == "0.2.3":
            raise RuntimeError("the Docker SDK fell over")
        return await super().service_state(service)


@pytest.mark.parametrize(
    ("deployment", "said"),
    [
        (lambda world: FakeDeployment(world, up_fails=True), "starting 0.2.3 failed: "),
        (InspectionFailsUnder, "verifying 0.2.3 failed: "),
    ],
)
async def test_the_rollback_of_a_failed_start_or_verification_says_which(
    tmp_path: Path, deployment: Callable[[World], FakeDeployment], said: str
) -> None:
    world = World(releases={"0.2.3": FakeRelease(healthy=True)})
    kit = make_kit(tmp_path, deployment=deployment(world))

    await kit.engine.upgrade(to="0.2.3")

    assert any(f"rolling back to 0.1.10: {said}" in line for line in kit.reports), kit.reports
