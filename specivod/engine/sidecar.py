"""Extra tables in the journal's SQLite file, each owned by its own small module (sightings,
operator controls, handled alerts), without touching ``Journal``'s schema.

Rule: one short-lived connection per use, the same durability as the journal (WAL,
``synchronous=FULL``, a busy timeout, since the daemon and the CLI write the same file).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from specivod.domain.errors import JournalError
from specivod.engine.journal import JOURNAL_NAME


@contextmanager
def connect(state_dir: Path, schema: str) -> Iterator[sqlite3.Connection]:
    """A connection with ``schema`` applied (``CREATE TABLE IF NOT EXISTS``); every statement
    commits on its own unless wrapped in ``with connection:``."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = sqlite3.connect(state_dir / JOURNAL_NAME, isolation_level=None)
    except (OSError, sqlite3.Error) as error:
        raise JournalError(f"cannot open the journal in {state_dir}: {error}") from None
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
        yield db
    except sqlite3.Error as error:
        raise JournalError(f"cannot use the journal in {state_dir}: {error}") from None
    finally:
        db.close()
