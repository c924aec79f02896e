"""The restore script that runs in the database container, with real ``sh`` and stand-in
``psql`` and ``pg_restore``: which path it takes, and that the dump reaches it whole."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from specivod.adapters.backup.postgres import PostgresDatabase
from specivod.settings import BackupSettings

FAKE_PSQL = """#!/bin/sh
# The leftover count for -c; otherwise the SQL on stdin is what psql would run.
for argument; do
    [ "$argument" = "-c" ] && { echo "$LEFTOVERS"; exit 0; }
done
cat > "$WORK/psql-input"
"""
FAKE_PG_RESTORE = """#!/bin/sh
# With -d it restores into the database itself; with -f - it prints SQL for psql.
for argument; do
    if [ "$argument" = "-d" ]; then
        cat > "$WORK/restored-directly"
        exit 0
    fi
done
cat > /dev/null
printf 'BEGIN;\\nCREATE TABLE t (id int);\\nCOMMIT;\\n'
"""


def _restore(tmp_path: Path, leftovers: str) -> subprocess.CompletedProcess[bytes]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, script in (("psql", FAKE_PSQL), ("pg_restore", FAKE_PG_RESTORE)):
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    database = PostgresDatabase(object(), BackupSettings())  # type: ignore[arg-type]
    command = database.restore_command("SELECT count(*) ...", "DROP TABLE IF EXISTS leftover")
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "WORK": str(tmp_path),
        "LEFTOVERS": leftovers,
    }
    return subprocess.run(
        command, input=b"PGDMP dump", env=environment, capture_output=True, timeout=30, check=False
    )


def test_without_leftovers_pg_restore_restores_the_dump_itself(tmp_path: Path) -> None:
    finished = _restore(tmp_path, "0")

    assert finished.returncode == 0, finished.stderr
    assert (tmp_path / "restored-directly").read_bytes() == b"PGDMP dump"
    assert not (tmp_path / "psql-input").exists()


@pytest.mark.parametrize("leftovers", ["1", "12"])
def test_leftovers_are_dropped_in_the_restores_transaction(tmp_path: Path, leftovers: str) -> None:
    finished = _restore(tmp_path, leftovers)

    assert finished.returncode == 0, finished.stderr
    assert not (tmp_path / "restored-directly").exists()
    sent = (tmp_path / "psql-input").read_text()
    assert sent.startswith("BEGIN;\nDROP TABLE IF EXISTS leftover;\nBEGIN;\nCREATE TABLE t")
    assert sent.rstrip().endswith("COMMIT;")
