"""Progress of long backup and restore phases for a person: tqdm bars when stderr is a terminal,
one plain line per finished phase (bytes, seconds, rate) when it is not. The engine's ports take
no progress callback: ``MeteredBackups`` binds one to the backups adapter it wraps."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn, Protocol, TextIO

from tqdm import tqdm

from specivod.adapters.backup.backups import Progress
from specivod.adapters.backup.estimate import human_size
from specivod.engine.ports import BackupRecord, RestoreRecord


class PhaseSink(Protocol):
    """A ``Progress`` callback whose current phase can be ended, e.g. before a step line."""

    def __call__(self, phase: str, done: int, total: int | None) -> None: ...

    def close(self) -> None: ...


class ProgressBars:
    """One tqdm bar per phase, on ``stream`` (stderr)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._phase: str | None = None
        self._bar: tqdm[NoReturn] | None = None

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        bar = self._bar
        if phase != self._phase or bar is None:
            self.close()
            self._phase = phase
            bar = self._bar = tqdm(
                desc=phase,
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=self._stream or sys.stderr,
            )
        if total is not None and done > total:
            bar.total = done
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._phase = None


class PhaseLines:
    """One line per phase on ``stream`` when the phase ends: no bars in logs and pipes."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._clock = clock
        self._phase: str | None = None
        self._started = 0.0
        self._done = 0

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if phase != self._phase:
            self.close()
            self._phase = phase
            self._started = self._clock()
        self._done = done

    def close(self) -> None:
        if self._phase is None:
            return
        seconds = max(self._clock() - self._started, 0.0)
        rate = f"{human_size(int(self._done / seconds))}/s" if seconds > 0 else "-"
        self._stream.write(f"{self._phase}: {human_size(self._done)} in {seconds:.1f} s ({rate})\n")
        self._stream.flush()
        self._phase = None


def sink_for(stream: TextIO) -> PhaseSink:
    """Bars on a terminal, plain lines otherwise."""
    return ProgressBars(stream) if stream.isatty() else PhaseLines(stream)


@contextlib.contextmanager
def progress_on(stream: TextIO) -> Iterator[Progress]:
    """``specivod backup``: bars on ``stream`` when it is a terminal, else one line per phase."""
    sink = sink_for(stream)
    try:
        yield sink
    finally:
        sink.close()


class ProgressBackups(Protocol):
    """The backups adapter as it is: the engine's ``Backups`` port plus a progress callback."""

    async def create(
        self,
        *,
        version: str | None,
        reason: str,
        progress: Progress | None = None,
        protect: Sequence[str] = (),
        keep_set_aside: Sequence[str] = (),
        safety: bool = False,
    ) -> BackupRecord: ...

    async def prepare_restore(self, backup_id: str, progress: Progress | None = None) -> object: ...

    def version_of(self, backup_id: str) -> str | None: ...

    def data_aside_path(self, label: str) -> Path: ...

    async def restore(
        self,
        backup_id: str,
        progress: Progress | None = None,
        *,
        verify: bool = True,
        data_aside: Path | None = None,
    ) -> RestoreRecord: ...

    async def fingerprint(self) -> str: ...

    async def end_other_sessions(self) -> list[str]: ...


class MeteredBackups:
    """The engine's ``Backups`` port over ``inner``, every long call reporting to ``progress``."""

    def __init__(self, inner: ProgressBackups, progress: Progress) -> None:
        self._inner = inner
        self._progress = progress

    async def create(
        self,
        *,
        version: str | None,
        reason: str,
        protect: Sequence[str] = (),
        keep_set_aside: Sequence[str] = (),
        safety: bool = False,
    ) -> BackupRecord:
        return await self._inner.create(
            version=version,
            reason=reason,
            progress=self._progress,
            protect=protect,
            keep_set_aside=keep_set_aside,
            safety=safety,
        )

    async def prepare_restore(self, backup_id: str) -> object:
        return await self._inner.prepare_restore(backup_id, self._progress)

    def version_of(self, backup_id: str) -> str | None:
        return self._inner.version_of(backup_id)

    def data_aside_path(self, label: str) -> Path:
        return self._inner.data_aside_path(label)

    async def restore(
        self, backup_id: str, *, verify: bool = True, data_aside: Path | None = None
    ) -> RestoreRecord:
        return await self._inner.restore(
            backup_id, self._progress, verify=verify, data_aside=data_aside
        )

    async def fingerprint(self) -> str:
        return await self._inner.fingerprint()

    async def end_other_sessions(self) -> list[str]:
        return await self._inner.end_other_sessions()
