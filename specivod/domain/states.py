"""The upgrade state machine: named states, the transitions allowed between them, and what
recovery does with a transaction found in each state.

    PLANNED → BACKING_UP → PULLING → PINNED → STARTING → VERIFYING → SUCCEEDED
    any failure before STARTING        → ABORTED (.env restored; the running app never stopped)
    failure in STARTING or VERIFYING   → ROLLING_BACK → [RESTORING] → ROLLED_BACK
    rollback itself fails              → ROLLBACK_FAILED

A manual rollback is a transaction of its own: PLANNED → ROLLING_BACK → [RESTORING] → ROLLED_BACK.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    PLANNED = "planned"
    BACKING_UP = "backing_up"
    PULLING = "pulling"
    PINNED = "pinned"
    STARTING = "starting"
    VERIFYING = "verifying"
    SUCCEEDED = "succeeded"
    ABORTED = "aborted"
    ROLLING_BACK = "rolling_back"
    RESTORING = "restoring"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def app_touched(self) -> bool:
        """True once ``docker compose up`` may have replaced the running containers."""
        return self in _APP_TOUCHED


TERMINAL = frozenset({State.SUCCEEDED, State.ABORTED, State.ROLLED_BACK, State.ROLLBACK_FAILED})
_APP_TOUCHED = frozenset(
    {State.STARTING, State.VERIFYING, State.ROLLING_BACK, State.RESTORING, State.ROLLBACK_FAILED}
)
BEFORE_START = (State.PLANNED, State.BACKING_UP, State.PULLING, State.PINNED)

TRANSITIONS: dict[State, frozenset[State]] = {
    State.PLANNED: frozenset({State.BACKING_UP, State.ROLLING_BACK, State.ABORTED}),
    State.BACKING_UP: frozenset({State.PULLING, State.ABORTED}),
    State.PULLING: frozenset({State.PINNED, State.ABORTED}),
    State.PINNED: frozenset({State.STARTING, State.ABORTED}),
    State.STARTING: frozenset({State.VERIFYING, State.ROLLING_BACK}),
    State.VERIFYING: frozenset({State.SUCCEEDED, State.ROLLING_BACK}),
    State.ROLLING_BACK: frozenset({State.RESTORING, State.ROLLED_BACK, State.ROLLBACK_FAILED}),
    State.RESTORING: frozenset({State.ROLLED_BACK, State.ROLLBACK_FAILED}),
    State.SUCCEEDED: frozenset(),
    State.ABORTED: frozenset(),
    State.ROLLED_BACK: frozenset(),
    State.ROLLBACK_FAILED: frozenset(),
}


class RestoreMode(StrEnum):
    """Whether a rollback restores the database and data dir from the backup."""

    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"

    def restores(self, schema_changed: bool) -> bool:
        return self is RestoreMode.ALWAYS or (self is RestoreMode.AUTO and schema_changed)


class IllegalTransition(ValueError):
    def __init__(self, current: State, proposed: State) -> None:
        super().__init__(f"illegal upgrade transition {current.name} → {proposed.name}")


def check_transition(current: State, proposed: State) -> None:
    if proposed not in TRANSITIONS[current]:
        raise IllegalTransition(current, proposed)
