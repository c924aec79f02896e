"""Progress for a person: bars on a terminal, plain lines elsewhere, and the bytes a restore or an
upgrade moves reach them through the engine."""

from __future__ import annotations

import io
import os
import pty
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import pytest

from specivod.adapters.backup.backups import Progress
from specivod.commands.progress_bars import (
    MeteredBackups,
    PhaseLines,
    ProgressBars,
    progress_on,
    sink_for,
)
from specivod.commands.runtime import ending_phases
from specivod.domain.states import State
from specivod.engine.journal import Transaction
from tests.unit.engine_kit import make_kit
from tests.unit.fakes import FakeBackup, FakeBackups, FakeRestore, World

MiB = 1024 * 1024


@pytest.fixture
def terminal() -> Iterator[tuple[TextIO, int]]:
    """A pseudo-terminal: the stream a command writes to, and the fd that reads the screen."""
    screen, tty = pty.openpty()
    stream = os.fdopen(tty, "w")
    try:
        yield stream, screen
    finally:
        stream.close()
        os.close(screen)


def _screen(fd: int) -> str:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_a_terminal_gets_bars_with_bytes_and_rate(terminal: tuple[TextIO, int]) -> None:
    stream, screen = terminal
    sink = sink_for(stream)
    assert isinstance(sink, ProgressBars)

    sink("database dump", 3 * MiB, 4 * MiB)
    sink.close()

    shown = _screen(screen)
    assert "database dump" in shown
    assert "3.00M/4.00M" in shown
    assert "B/s" in shown
    assert "\r" in shown  # redrawn in place: a bar, not lines


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_pipe_gets_one_plain_line_per_phase() -> None:
    stream = io.StringIO()
    assert isinstance(sink_for(stream), PhaseLines)
    ticks = Ticks()
    sink = PhaseLines(stream, ticks)

    sink("database restore", MiB, 4 * MiB)
    ticks.now += 2
    sink("database restore", 4 * MiB, 4 * MiB)
    sink("data dir restore", 0, None)
    ticks.now += 1
    sink("data dir restore", 3 * MiB, None)
    sink.close()
    sink.close()

    assert stream.getvalue().splitlines() == [
        "database restore: 4.0 MiB in 2.0 s (2.0 MiB/s)",
        "data dir restore: 3.0 MiB in 1.0 s (3.0 MiB/s)",
    ]
    assert "\r" not in stream.getvalue()


class Recorder:
    """A progress sink that remembers what it saw, and when a phase was ended."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int | None]] = []
        self.events: list[str] = []

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        self.seen.append((phase, done, total))
        self.events.append(f"{phase} {done}")

    def close(self) -> None:
        self.events.append("close")


class MovingBackups(FakeBackups):
    """The fake backups, reporting bytes the way the real adapter does."""

    async def create(
        self,
        *,
        version: str | None,
        reason: str,
        progress: Progress | None = None,
        protect: Sequence[str] = (),
        keep_set_aside: Sequence[str] = (),
        safety: bool = False,
    ) -> FakeBackup:
        if progress is not None:
            progress("database dump", 5 * MiB, None)
        return await super().create(
            version=version,
            reason=reason,
            protect=protect,
            keep_set_aside=keep_set_aside,
            safety=safety,
        )

    async def prepare_restore(self, backup_id: str, progress: Progress | None = None) -> FakeBackup:
        if progress is not None:
            progress("verify", 2 * MiB, 2 * MiB)
        return await super().prepare_restore(backup_id)

    async def restore(
        self,
        backup_id: str,
        progress: Progress | None = None,
        *,
        verify: bool = True,
        data_aside: Path | None = None,
    ) -> FakeRestore:
        if progress is not None:
            progress("database restore", 7 * MiB, 7 * MiB)
        return await super().restore(backup_id, verify=verify, data_aside=data_aside)


async def test_an_upgrade_passes_the_dumped_bytes_through(tmp_path: Path) -> None:
    world = World()
    backups = MovingBackups(world)
    kit = make_kit(tmp_path, world, backups=backups)
    sink = Recorder()
    kit.engine.context.backups = MeteredBackups(backups, sink)

    result = await kit.engine.upgrade(to="0.2.0")

    assert result.transaction.state is State.SUCCEEDED
    assert sink.seen == [("database dump", 5 * MiB, None)]


async def test_a_restore_passes_the_checked_dumped_and_restored_bytes_through(
    tmp_path: Path,
) -> None:
    world = World()
    backups = MovingBackups(world)
    kit = make_kit(tmp_path, world, backups=backups)
    upgrade = (await kit.engine.upgrade(to="0.2.0")).transaction
    assert upgrade.backup_id is not None
    sink = Recorder()
    kit.engine.context.backups = MeteredBackups(backups, sink)

    result = await kit.engine.restore(upgrade.backup_id, "0.1.10")

    assert result.transaction.state is State.ROLLED_BACK
    assert set(sink.seen) == {
        ("database dump", 5 * MiB, None),  # the safety backup of what is replaced
        ("verify", 2 * MiB, 2 * MiB),
        ("database restore", 7 * MiB, 7 * MiB),
    }
    assert backups.restored == [upgrade.backup_id]


async def test_a_step_line_ends_the_bar_before_it_is_printed(tmp_path: Path) -> None:
    world = World()
    backups = MovingBackups(world)
    kit = make_kit(tmp_path, world, backups=backups)
    sink = Recorder()
    steps = kit.engine.context.report

    def report(transaction: Transaction, message: str) -> None:
        sink.events.append(f"step {transaction.state.name}")
        steps(transaction, message)

    kit.engine.context.backups = MeteredBackups(backups, sink)
    kit.engine.context.report = ending_phases(sink, report)

    await kit.engine.upgrade(to="0.2.0")

    dump = sink.events.index(f"database dump {5 * MiB}")
    assert sink.events[dump + 1 : dump + 3] == ["close", "step PULLING"]
    assert kit.reports  # the steps still reach the operator


def test_a_backup_without_a_terminal_still_says_each_phase_once() -> None:
    stream = io.StringIO()
    with progress_on(stream) as progress:
        progress("database dump", 1 << 20, None)
        progress("database dump", 2 << 20, None)
        progress("data dir snapshot", 5, 10)
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["database dump", "data dir snapshot"]
    assert "2.0 MiB" in lines[0]
