"""Progress reports of long backup steps: a phase name, the bytes done so far, the total when
known; for a child process reading or writing a file, its position polled while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO

POLL_SECONDS = 0.5
Position = Callable[[int], None]

Progress = Callable[[str, int, int | None], None]
"""Called with a phase name, the bytes done so far and the total when known."""


class Meter:
    """One phase's progress, fed with positions (``at``) or increments (``add``)."""

    def __init__(self, progress: Progress | None, phase: str, total: int | None) -> None:
        self._progress = progress
        self._phase = phase
        self._total = total
        self._done = 0

    def at(self, done: int) -> None:
        self._done = done
        if self._progress is not None:
            self._progress(self._phase, done, self._total)

    def add(self, amount: int) -> None:
        self.at(self._done + amount)


def written_size(stream: BinaryIO) -> int:
    return os.fstat(stream.fileno()).st_size


def read_position(stream: BinaryIO) -> int:
    # The child process shares this open file description, so its offset is the child's.
    return os.lseek(stream.fileno(), 0, os.SEEK_CUR)


@contextlib.asynccontextmanager
async def reporting(
    stream: BinaryIO, report: Position | None, measure: Callable[[BinaryIO], int]
) -> AsyncIterator[None]:
    """While the block runs, report how far a child process got in ``stream``."""
    if report is None:
        yield
        return

    async def poll() -> None:
        while True:
            report(measure(stream))
            await asyncio.sleep(POLL_SECONDS)

    task = asyncio.create_task(poll())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        report(measure(stream))
