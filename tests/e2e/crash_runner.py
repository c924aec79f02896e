"""Run the real ``specivod`` CLI, but SIGKILL the process at a chosen instant:
``python -m tests.e2e.crash_runner WHEN specivod-args...``.

``WHEN`` is a state name (killed right after that state is committed to the journal) or
``SYNC:N`` (killed right after a restore's data dir sync placed its N-th file) or
``PINNED+ENV`` (killed right after the PINNED step's ``.env`` rename, before STARTING is
journaled).

This is the test's own fault injection; specivod itself has no crash switch.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from specivod.adapters.backup import datasync, restoring
from specivod.adapters.compose import ComposeDeployment
from specivod.cli import main
from specivod.domain.states import State
from specivod.engine.journal import Journal, Transaction

SYNC_PREFIX = "SYNC:"
AFTER_PIN = "PINNED+ENV"


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(state: State) -> None:
    begin, advance = Journal.begin, Journal.advance

    def begin_then_die(self: Journal, *args: Any, **kwargs: Any) -> Transaction:
        begun = begin(self, *args, **kwargs)
        if state is State.PLANNED:
            _die()
        return begun

    def advance_then_die(self: Journal, transaction: Transaction, new: State, **kwargs: Any) -> Any:
        moved = advance(self, transaction, new, **kwargs)
        if new is state:
            _die()
        return moved

    Journal.begin = begin_then_die  # type: ignore[method-assign]
    Journal.advance = advance_then_die  # type: ignore[method-assign, assignment]


def arm_sync(placed: int) -> None:
    """Kill the process once the data dir sync has renamed ``placed`` files into place, through
    the sync's own ``step`` hook (the restore passes none)."""
    original = datasync.sync_from_snapshot
    count = 0

    def step(event: str, path: str) -> None:
        nonlocal count
        if event == "placed":
            count += 1
            if count >= placed:
                _die()

    def sync_then_die(*args: Any, **kwargs: Any) -> datasync.SyncSummary:
        return original(*args, **{**kwargs, "step": step})

    datasync.sync_from_snapshot = sync_then_die
    restoring.sync_from_snapshot = sync_then_die  # type: ignore[attr-defined]


def arm_pin() -> None:
    """Kill the process once the first ``pin`` (the upgrade's PINNED step; an abort or rollback
    pins again only later) has rewritten ``.env``."""
    original = ComposeDeployment.pin

    def pin_then_die(self: ComposeDeployment, version: str) -> None:
        original(self, version)
        _die()

    ComposeDeployment.pin = pin_then_die  # type: ignore[method-assign]


if __name__ == "__main__":
    when = sys.argv[1]
    if when.startswith(SYNC_PREFIX):
        arm_sync(int(when.removeprefix(SYNC_PREFIX)))
    elif when == AFTER_PIN:
        arm_pin()
    else:
        arm(State[when])
    sys.exit(main(sys.argv[2:]))
