"""Builds an ``Engine`` on the fakes, for the engine unit tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from specivod.domain.references import parse_reference
from specivod.domain.states import State
from specivod.domain.versions import Step, VersionPolicy
from specivod.domain.windows import Window
from specivod.engine.context import Context, StopFlag
from specivod.engine.journal import Journal, Transaction
from specivod.engine.service import Engine
from specivod.engine.verification import HealthGate
from specivod.settings import HealthSettings
from tests.unit.fakes import (
    FakeBackups,
    FakeClock,
    FakeDeployment,
    FakeRegistry,
    UnusedProbe,
    World,
)

TAGS = ["0.1.9", "0.1.10", "0.1.11", "0.2.0", "0.2.1", "0.2.3", "0.3.0", "latest"]
ALWAYS_OPEN = Window(frozenset(range(7)), time(0, 0), time(0, 0), ZoneInfo("UTC"))


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


def crash_after(journal: Journal, state: State) -> None:
    """Make ``journal`` die like SIGKILL right after it has committed ``state``."""
    if state is State.PLANNED:
        begin = journal.begin

        def begin_then_die(*args: Any, **kwargs: Any) -> Transaction:
            begin(*args, **kwargs)
            raise Crash(state.name)

        journal.begin = begin_then_die  # type: ignore[method-assign]
        return
    advance = journal.advance

    def advance_then_die(transaction: Transaction, new: State, **kwargs: Any) -> Transaction:
        moved = advance(transaction, new, **kwargs)
        if new is state:
            raise Crash(state.name)
        return moved

    journal.advance = advance_then_die  # type: ignore[method-assign, assignment]


@dataclass
class Kit:
    world: World
    deployment: FakeDeployment
    backups: FakeBackups
    registry: FakeRegistry
    clock: FakeClock
    journal: Journal
    engine: Engine
    reports: list[str]
    stop: StopFlag

    def steps(self, transaction: Transaction) -> list[str]:
        return [step.state.name for step in self.journal.steps(transaction.id)]


def make_kit(
    state_dir: Path,
    world: World | None = None,
    *,
    deployment: FakeDeployment | None = None,
    backups: FakeBackups | None = None,
    tags: list[str] | None = None,
    windows: list[Window] | None = None,
    policy: VersionPolicy | None = None,
    journal: Journal | None = None,
) -> Kit:
    world = world or (deployment.world if deployment else World())
    deployment = deployment or FakeDeployment(world)
    backups = backups or FakeBackups(world)
    registry = FakeRegistry(tags if tags is not None else TAGS)
    clock = FakeClock()
    journal = journal or Journal(state_dir)
    health = HealthSettings(retries=3, interval=timedelta(seconds=2))
    gate = HealthGate(deployment, UnusedProbe(), health, parse_reference(registry.reference), clock)
    reports: list[str] = []
    stop = StopFlag()
    context = Context(
        journal=journal,
        deployment=deployment,
        backups=backups,
        gate=gate,
        clock=clock,
        report=lambda transaction, message: reports.append(f"{transaction.state.name}: {message}"),
        stop=stop,
    )
    engine = Engine(
        context,
        registry,
        policy or VersionPolicy(">=0.1.0 <1.0.0", step=Step.MINOR),
        windows if windows is not None else [ALWAYS_OPEN],
        state_dir,
    )
    return Kit(world, deployment, backups, registry, clock, journal, engine, reports, stop)
