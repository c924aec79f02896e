"""Refuse a command that needs the host lock at once when another specivod operation holds it:
before the registry is read or the engine opened, so "busy" is the answer however slow (or
broken) the rest would be. The probe lets go of the lock straight away; the operation takes it
again for itself, so a command that passes here and then loses the race is still refused."""

from __future__ import annotations

from pathlib import Path

from specivod.domain.errors import SpecivodError
from specivod.engine.lock import LOCK_NAME, host_lock

EXCLUSIVE_COMMANDS = frozenset({"upgrade", "rollback", "restore", "backup", "recover"})
"""The commands that run under the host lock (the daemon's transactions do too)."""


def refuse_when_busy(state_dir: Path, command: str) -> None:
    """Raise ``LockedError`` naming the holder when the host lock is held."""
    try:
        with host_lock(state_dir, f"{command} (about to start)"):
            pass
    except OSError as error:
        raise SpecivodError(f"cannot take the lock {state_dir / LOCK_NAME}: {error}") from None
