"""Run the real ``specivod`` CLI, but SIGKILL the process right after a given state is committed
to the journal: ``python -m tests.e2e.crash_runner STATE specivod-args...``.

This is the test's own fault injection; specivod itself has no crash switch.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from specivod.cli import main
from specivod.domain.states import State
from specivod.engine.journal import Journal, Transaction


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


if __name__ == "__main__":
    arm(State[sys.argv[1]])
    sys.exit(main(sys.argv[2:]))
