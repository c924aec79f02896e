"""A sync killed at any instant and run again ends at the snapshot with nothing lost: the real
sync runs in a child process that SIGKILLs itself right after its k-th rename, or in the middle
of copying a file; the parent then runs it again with the same arguments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from specivod.adapters.backup.datasync import TEMP_PREFIX, sync_from_snapshot
from tests.unit.snapshot_kit import MIB, contents, describe, failed_release, two_snapshots

CHILD = """
import os, signal, sys
from pathlib import Path
from specivod.adapters.backup.datasync import sync_from_snapshot

tmp, where, after = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
seen = [0]

def count(*_):
    seen[0] += 1
    if seen[0] >= after:
        os.kill(os.getpid(), signal.SIGKILL)

sync_from_snapshot(
    tmp / "two", tmp / "two.index", tmp / "data", tmp / "aside",
    step=count if where == "step" else None, done=count if where == "copy" else None,
)
print("finished without being killed")
"""


@pytest.mark.parametrize(
    ("where", "after"),
    [("step", 1), ("step", 2), ("step", 5), ("step", 12), ("step", 20), ("copy", 1), ("copy", 2)],
)
def test_a_killed_sync_run_again_converges_and_loses_nothing(
    tmp_path: Path, where: str, after: int
) -> None:
    paths, expected = two_snapshots(tmp_path)
    data = tmp_path / "data"
    before = set(contents(data))
    new_contents = set(failed_release(data, paths)) - before
    big = data / paths[100]  # a snapshot copy of several chunks: a kill can land inside it
    big.write_bytes(b"b" * 3 * MIB)
    new_contents |= set(contents(data)) - before
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), where, str(after)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert child.returncode == -9, child.stdout + child.stderr
    sync_from_snapshot(tmp_path / "two", tmp_path / "two.index", data, tmp_path / "aside")
    assert describe(data) == expected
    assert new_contents <= set(contents(tmp_path / "aside"))
    assert not list(data.rglob(f"{TEMP_PREFIX}*"))
