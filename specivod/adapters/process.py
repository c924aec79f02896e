"""Run external commands from asyncio: bounded by a timeout, killed with everything they started
when cancelled or late, stderr kept for the error message, stdout captured or streamed to a file
descriptor. A command and its stderr reach a message or a log line only through ``redaction``: a
configured command shows its program and the rest with every secret masked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from specivod.redaction import redact, redact_argv

log = logging.getLogger(__name__)
_STDERR_KEPT = 8192
_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class Completed:
    command: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self, shown: Sequence[str] | str | None = None) -> str:
        """``<command> exited with N: <last stderr lines>`` for error messages; ``shown`` names
        the command more briefly than its full argv (a string is shown as it is)."""
        detail = " / ".join(line.strip() for line in self.stderr.strip().splitlines()[-3:])
        if isinstance(shown, str):
            name = redact(shown)
        else:
            name = _shown(shown if shown is not None else self.command)
        return f"`{name}` exited with {self.returncode}" + (f": {redact(detail)}" if detail else "")


class CommandTimeout(Exception):
    def __init__(self, command: Sequence[str], timeout: float) -> None:
        super().__init__(f"`{_shown(command)}` did not finish within {timeout:.0f}s")


def _shown(command: Sequence[str]) -> str:
    return shlex.join(redact_argv(command))


async def run(
    command: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
) -> Completed:
    """Run ``command``; with ``stdout`` given, its output goes straight to that file."""
    log.debug("running %s", _shown(command))
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=stdout if stdout is not None else asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        await _kill(process)
        raise CommandTimeout(command, timeout) from None
    except asyncio.CancelledError:
        await _kill(process)
        raise
    return Completed(
        command=tuple(command),
        returncode=process.returncode if process.returncode is not None else -1,
        stdout=(out or b"").decode(errors="replace"),
        stderr=(err or b"")[-_STDERR_KEPT:].decode(errors="replace"),
    )


async def _kill(process: asyncio.subprocess.Process) -> None:
    """Stop the command and whatever it started (its session): TERM, a grace period, KILL."""
    _signal_group(process, signal.SIGTERM)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), _GRACE_SECONDS)
    finally:
        _signal_group(process, signal.SIGKILL)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(process.wait(), 10)


def _signal_group(process: asyncio.subprocess.Process, number: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, number)
