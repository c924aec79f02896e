"""Wiring: the real adapters around one engine, opened and closed with the command."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from specivod.adapters.backup.backups import Backups
from specivod.adapters.clock import SystemClock
from specivod.adapters.compose import ComposeDeployment
from specivod.adapters.http_probe import AiohttpProbe
from specivod.adapters.registry import registry_from_settings
from specivod.adapters.smoke_command import SubprocessCommands
from specivod.commands.progress_bars import MeteredBackups, PhaseSink
from specivod.engine.context import Context, Reporter, StopFlag
from specivod.engine.journal import Journal, Transaction
from specivod.engine.ports import Backups as BackupsPort
from specivod.engine.service import Engine
from specivod.engine.verification import HealthGate
from specivod.settings import Settings


def print_progress(transaction: Transaction, message: str) -> None:
    """One line per step on stdout, as it happens."""
    stamp = datetime.now().astimezone().strftime("%H:%M:%S")
    sys.stdout.write(f"[{stamp}] {transaction.state.name:<15} {message}\n")
    sys.stdout.flush()


def ending_phases(sink: PhaseSink, report: Reporter) -> Reporter:
    """``report``, once the sink has ended its phase: a step line never lands inside a bar."""

    def step(transaction: Transaction, message: str) -> None:
        sink.close()
        report(transaction, message)

    return step


def stop_on_signals(stop: StopFlag) -> None:
    """SIGTERM/SIGINT ask the engine to stop at the next step boundary; they never cut a step."""
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        name = signal.Signals(number).name
        loop.add_signal_handler(number, stop.request, f"{name} received")


@asynccontextmanager
async def open_engine(
    settings: Settings,
    report: Reporter,
    stop: StopFlag | None = None,
    progress: PhaseSink | None = None,
) -> AsyncIterator[Engine]:
    """``progress``, when given, sees the bytes every backup and restore step moves."""
    clock = SystemClock()
    deployment = ComposeDeployment(
        settings.deployment, database_service=settings.backup.database_service
    )
    journal = Journal(settings.state.dir)
    try:
        adapter = Backups(settings, deployment)
        backups: BackupsPort = adapter
        if progress is not None:
            backups = MeteredBackups(adapter, progress)
            report = ending_phases(progress, report)
        async with (
            registry_from_settings(settings.registry) as registry,
            AiohttpProbe() as probe,
        ):
            gate = HealthGate(
                deployment,
                probe,
                settings.health,
                settings.registry.reference,
                clock,
                commands=SubprocessCommands(),
            )
            context = Context(
                journal=journal,
                deployment=deployment,
                backups=backups,
                gate=gate,
                clock=clock,
                report=report,
                stop=stop or StopFlag(),
            )
            yield Engine(
                context,
                registry,
                settings.policy.version_policy(),
                settings.windows(),
                settings.state.dir,
            )
    finally:
        if progress is not None:
            progress.close()
        journal.close()
        deployment.close()
