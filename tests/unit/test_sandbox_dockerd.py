"""The sandbox's dockerd is stopped by its last user, whichever session started it, and an
engine the sandbox did not start is never stopped (a stand-in process named "dockerd" plays it)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import dockerd
from sandbox.dockerd import Engine


class Client:
    def close(self) -> None:
        pass


@pytest.fixture
def fake_dockerd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[subprocess.Popen[bytes]]:
    monkeypatch.setattr(dockerd, "USERS", tmp_path / "users.lock")
    monkeypatch.setattr(dockerd, "STARTED", tmp_path / "engine.pid")
    sleeper = tmp_path / "dockerd"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", sleeper)
    process = subprocess.Popen([str(sleeper), "600"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def session(process: subprocess.Popen[bytes] | None) -> Engine:
    return Engine(Client(), process, dockerd._use())  # type: ignore[arg-type]


def stopped(process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 10
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return process.poll() is not None


def test_the_last_user_stops_the_engine_the_first_session_started(
    fake_dockerd: subprocess.Popen[bytes],
) -> None:
    dockerd.STARTED.write_text(f"{fake_dockerd.pid}\n")
    starter, other = session(fake_dockerd), session(None)
    starter.stop()
    assert fake_dockerd.poll() is None  # another session still uses it
    other.stop()
    assert stopped(fake_dockerd)
    assert not dockerd.STARTED.exists()


def test_an_engine_the_sandbox_did_not_start_is_never_stopped(
    fake_dockerd: subprocess.Popen[bytes],
) -> None:
    only = session(None)
    only.stop()
    time.sleep(0.3)
    assert fake_dockerd.poll() is None


def test_a_stale_pid_that_is_no_dockerd_is_not_signalled(
    fake_dockerd: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    other = subprocess.Popen(["sleep", "600"])
    try:
        dockerd.STARTED.write_text(f"{other.pid}\n")
        session(None).stop()
        time.sleep(0.3)
        assert other.poll() is None
        assert not dockerd.STARTED.exists()
    finally:
        other.kill()
        other.wait()
