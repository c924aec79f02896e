"""The transaction state machine: named states and the transitions allowed between them.

Upgrade:
    PLANNED → BACKING_UP → PULLING → PINNED → STARTING → VERIFYING → SUCCEEDED
    any failure before STARTING          → ABORTED (.env restored; the running app never stopped)
    killed in PINNED, and the target started since (a boot's compose up) → ROLLING_BACK
    failure in STARTING or VERIFYING     → ROLLING_BACK → STOPPING → [SAFETY_BACKUP → RESTORING]
                                           → RESTARTING → ROLLED_BACK
    the rollback itself fails            → ROLLBACK_FAILED
Manual rollback and restore (the current version is running):
    PLANNED → ROLLING_BACK → STOPPING → [SAFETY_BACKUP → RESTORING] → RESTARTING → ROLLED_BACK
    a check in ROLLING_BACK fails (backup unusable, previous image missing) → ABORTED, app serving
    the safety backup (taken with the app stopped) fails → the app started again, ABORTED
Either rollback: an app found running again in RESTORING (dockerd restarted it) is stopped, and
    RESTORING → SAFETY_BACKUP saves what it wrote meanwhile before the restore goes on

Rule: a state names the step that is running; it is journaled before the step acts.
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
    STOPPING = "stopping"
    SAFETY_BACKUP = "safety_backup"
    RESTORING = "restoring"
    RESTARTING = "restarting"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.SUCCEEDED, State.ABORTED, State.ROLLED_BACK, State.ROLLBACK_FAILED})
ROLLBACK_PATH = (
    State.ROLLING_BACK,
    State.STOPPING,
    State.SAFETY_BACKUP,
    State.RESTORING,
    State.RESTARTING,
    State.ROLLED_BACK,
)
"""The states of a rollback that restores, in order; an image rollback skips two of them."""
BEFORE_START = frozenset({State.PLANNED, State.BACKING_UP, State.PULLING, State.PINNED})
"""An upgrade in one of these never touched the running app."""

TRANSITIONS: dict[State, frozenset[State]] = {
    State.PLANNED: frozenset({State.BACKING_UP, State.ROLLING_BACK, State.ABORTED}),
    State.BACKING_UP: frozenset({State.PULLING, State.ABORTED}),
    State.PULLING: frozenset({State.PINNED, State.ABORTED}),
    State.PINNED: frozenset({State.STARTING, State.ROLLING_BACK, State.ABORTED}),
    State.STARTING: frozenset({State.VERIFYING, State.ROLLING_BACK}),
    State.VERIFYING: frozenset({State.SUCCEEDED, State.ROLLING_BACK}),
    State.ROLLING_BACK: frozenset({State.STOPPING, State.ABORTED, State.ROLLBACK_FAILED}),
    State.STOPPING: frozenset({State.SAFETY_BACKUP, State.RESTARTING, State.ROLLBACK_FAILED}),
    State.SAFETY_BACKUP: frozenset({State.RESTORING, State.ABORTED, State.ROLLBACK_FAILED}),
    State.RESTORING: frozenset({State.RESTARTING, State.SAFETY_BACKUP, State.ROLLBACK_FAILED}),
    State.RESTARTING: frozenset({State.ROLLED_BACK, State.ROLLBACK_FAILED}),
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
        super().__init__(f"illegal transition {current.name} → {proposed.name}")


def check_transition(current: State, proposed: State) -> None:
    if proposed not in TRANSITIONS[current]:
        raise IllegalTransition(current, proposed)
