"""Progress reports of long backup steps: a phase name, the bytes done so far, the total when
known."""

from __future__ import annotations

from collections.abc import Callable

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
