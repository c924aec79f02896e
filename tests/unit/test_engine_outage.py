"""A Docker Engine that goes away mid-step and comes back: the step runs again and the
transaction goes on; one that does not come back leaves the step's failure as it was. The daemon's
view of the engine: ``specivod_engine_up``, the status, and the gate."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from specivod.daemon.engine_watch import EngineWatch
from specivod.daemon.extra_metrics import DaemonCollector, DaemonView
from specivod.daemon.scheduling import Gate, window_verdict
from specivod.domain.errors import DeploymentError
from specivod.domain.states import State
from specivod.engine.engine_outage import MAX_RERUNS, stopped_since
from specivod.engine.ports import ServiceState
from tests.unit.engine_kit import make_kit
from tests.unit.fakes import FakeDeployment, World

T0 = datetime(2026, 11, 26, 16, 0, tzinfo=UTC)


class FlakyEngine(FakeDeployment):
    """The engine goes away during the first ``outages`` calls of ``during`` (a pull, or the
    health checks of one verification) and comes back when the transaction asks, unless
    ``never_back``."""

    def __init__(self, world: World, during: str, outages: int = 1, never_back: bool = False):
        super().__init__(world)
        self.during = during
        self.outages = outages
        self.never_back = never_back
        self.down = False
        self.recoveries = 0

    async def pull(self, version: str) -> None:
        if self.during == "pull" and self.outages:
            self.outages -= 1
            self.down = True
            self.world.calls.append(f"pull {version} (engine gone)")
            raise DeploymentError("Cannot connect to the Docker daemon")
        await super().pull(version)

    async def service_state(self, service: str) -> ServiceState:
        if self.during == "verify" and self.outages and self.world.running != "0.1.10":
            self.down = True
            return ServiceState(service, "c1", "exited", None, "", "", finished_at="x")
        return await super().service_state(service)

    async def recover_from_outage(self) -> str | None:
        if not self.down:
            return None
        if self.never_back:
            raise DeploymentError("the Docker Engine does not answer; waited 300s for it")
        self.down = False
        self.recoveries += 1
        if self.during == "verify":
            self.outages -= 1
        self.world.calls.append("engine back")
        return "the Docker Engine did not answer and is back"


async def test_a_pull_the_engine_died_under_runs_again_once_it_is_back(tmp_path: Path) -> None:
    world = World()
    kit = make_kit(tmp_path, deployment=FlakyEngine(world, "pull"))

    result = await kit.engine.upgrade(to="0.2.0")

    assert result.transaction.state is State.SUCCEEDED
    pulls = [call for call in world.calls if "pull" in call or "engine" in call]
    assert pulls == ["pull 0.2.0 (engine gone)", "engine back", "pull 0.2.0"]
    assert any("running PULLING again" in report for report in kit.reports)


async def test_a_verification_the_engine_died_under_runs_again(tmp_path: Path) -> None:
    world = World()
    kit = make_kit(tmp_path, deployment=FlakyEngine(world, "verify"))

    result = await kit.engine.upgrade(to="0.2.0")

    assert result.transaction.state is State.SUCCEEDED
    assert "engine back" in world.calls
    assert any("running VERIFYING again" in report for report in kit.reports)


async def test_an_engine_that_never_comes_back_leaves_the_failure(tmp_path: Path) -> None:
    world = World()
    kit = make_kit(tmp_path, deployment=FlakyEngine(world, "pull", never_back=True))

    result = await kit.engine.upgrade(to="0.2.0")

    assert result.transaction.state is State.ABORTED
    assert "Cannot connect to the Docker daemon" in (result.transaction.reason or "")
    assert any("waited 300s" in report for report in kit.reports)
    assert world.pinned == world.running == "0.1.10"


async def test_an_engine_that_keeps_dying_is_not_waited_for_forever(tmp_path: Path) -> None:
    world = World()
    flaky = FlakyEngine(world, "pull", outages=MAX_RERUNS + 5)
    kit = make_kit(tmp_path, deployment=flaky)

    result = await kit.engine.upgrade(to="0.2.0")

    assert result.transaction.state is State.ABORTED
    assert flaky.recoveries == MAX_RERUNS


def state(service: str, status: str, finished: str) -> ServiceState:
    return ServiceState(service, f"id-{service}", status, None, "", "", finished_at=finished)


def test_only_containers_stopped_after_the_engine_was_last_seen_are_started_again() -> None:
    states = [
        state("db", "exited", "2026-11-26T16:00:03.123456789Z"),
        state("api", "exited", "2026-11-26T16:00:00.999Z"),
        state("worker", "exited", "2026-11-26T16:00:00.2Z"),  # before, in the same second
        state("sidecar", "exited", "2026-11-26T15:59:58.5Z"),
        state("odd", "exited", "yesterday"),
        state("cache", "running", "2026-11-26T16:00:05Z"),
        state("never", "created", "0001-01-01T00:00:00Z"),
        ServiceState("gone", None, "absent", None, "", ""),
    ]

    assert stopped_since(states, T0 + timedelta(milliseconds=500)) == ["db", "api"]


async def test_the_watch_says_when_the_engine_stops_and_comes_back() -> None:
    answers: list[str | None] = ["the Docker Engine does not answer: connection refused", None]
    now = [T0]
    watch = EngineWatch(lambda: answers[0], lambda: now[0], every=1)

    assert watch.health.reachable is None and watch.health.blocks is None
    down = await watch.check()
    assert (down.reachable, down.since) == (False, T0)
    assert down.blocks == down.problem == "the Docker Engine does not answer: connection refused"
    now[0] = T0 + timedelta(seconds=30)
    answers.pop(0)
    back = await watch.check()
    assert (back.reachable, back.problem, back.since) == (True, None, now[0])
    assert back.as_json()["since"] == now[0].isoformat()


@pytest.mark.parametrize(("up", "line"), [(True, b"1.0"), (False, b"0.0"), (None, None)])
def test_engine_up_metric(up: bool | None, line: bytes | None) -> None:
    registry = CollectorRegistry()
    registry.register(DaemonCollector(lambda: DaemonView(engine_up=up)))

    exported = [
        row
        for row in generate_latest(registry).splitlines()
        if row.startswith(b"specivod_engine_up ")
    ]

    assert exported == ([b"specivod_engine_up " + line] if line else [])


def test_an_unreachable_engine_blocks_unattended_upgrades_first_after_a_person() -> None:
    open_window = window_verdict([], T0, timedelta(0))
    gate = Gate(window=open_window, paused="paused", engine="the Docker Engine does not answer")

    assert gate.blocked_by == "the Docker Engine does not answer"
    assert Gate(window=open_window, needs_a_person="ROLLBACK_FAILED", engine="x").blocked_by == (
        "ROLLBACK_FAILED"
    )


def test_the_watch_never_blocks_the_loop() -> None:
    async def scenario() -> float:
        watch = EngineWatch(lambda: __import__("time").sleep(0.3) or None, lambda: T0, every=1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while loop.time() - started < 0.3:
                ticks += 1
                await asyncio.sleep(0.01)

        await asyncio.gather(watch.check(), ticker())
        return ticks

    assert asyncio.run(scenario()) > 5
