"""External commands: a late command is stopped together with everything it started."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from specivod.adapters.process import CommandTimeout, Completed, run


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


def test_a_late_command_is_stopped_with_its_children(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {child_pid}; wait"

    with pytest.raises(CommandTimeout, match="did not finish within 1s"):
        asyncio.run(run(["sh", "-c", script], timeout=1))

    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the command's child outlived the timeout"


async def test_output_and_exit_code_are_returned() -> None:
    result = await run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)

    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.describe(["tool"]) == "`tool` exited with 3: err"


def test_a_failed_command_is_described_with_its_secrets_masked() -> None:
    result = Completed(
        command=("pg_dump", "--password", "pw-1", "postgresql://u:pw-2@h/db", "PGPASSWORD=pw-3"),
        returncode=1,
        stdout="",
        stderr="connection to postgresql://u:pw-2@h/db failed\n",
    )

    described = result.describe()

    assert not any(secret in described for secret in ("pw-1", "pw-2", "pw-3"))
    assert described.startswith("`pg_dump --password '********' 'postgresql://u:********@h/db'")
    assert described.endswith("exited with 1: connection to postgresql://u:********@h/db failed")
