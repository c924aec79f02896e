"""One upgrade (or backup, or restore) at a time on this host: an advisory ``flock`` on a file in
the state dir. The kernel releases it when the process dies, so a crash never leaves it stuck."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from specivod.domain.errors import LockedError

LOCK_NAME = "specivod.lock"


@contextlib.contextmanager
def host_lock(state_dir: Path, purpose: str) -> Iterator[None]:
    """Hold the host-wide lock for the duration of the block, or raise ``LockedError``."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / LOCK_NAME
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip()
            raise LockedError(
                f"another specivod operation holds {path} ({holder or 'unknown holder'})"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()}: {purpose}\n".encode(), 0)
        yield
    finally:
        os.close(descriptor)
