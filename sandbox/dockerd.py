"""A Docker Engine for the sandbox: reuse a running one, or start dockerd as STACK.md says
(no bridge, no iptables: every container uses the host network on loopback).

Every session using the engine holds a shared ``flock`` on ``USERS`` while it does. A dockerd
started here is named in ``STARTED``; whichever session is its last user (it can take that lock
exclusively) stops it, so a test session never pulls the engine from under another one running
on the same machine, and an engine is not left running when the session that started it ended
first. An engine this module did not start is never stopped."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException

SOCKET = Path("/var/run/docker.sock")
USERS = Path("/run/specivod-sandbox-engine.lock")
STARTED = Path("/run/specivod-sandbox-engine.pid")
"""The pid of the dockerd this module started, while it runs."""
STOP_SECONDS = 30.0


@dataclass
class Engine:
    client: docker.DockerClient
    process: subprocess.Popen[bytes] | None
    users: int
    """This session's descriptor of ``USERS``, locked shared."""

    def stop(self) -> None:
        self.client.close()
        try:
            if _last_user(self.users):
                _stop_started_engine()
        finally:
            if self.process is not None and self.process.poll() is not None:
                self.process.wait()
            os.close(self.users)


def _started_pid() -> int | None:
    """The dockerd named in ``STARTED``, if that process still is a running dockerd (not a
    zombie its parent, the session that started it, has yet to reap)."""
    try:
        pid = int(STARTED.read_text())
        status = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    command, _, rest = status.partition("(")[2].rpartition(")")
    return pid if command == "dockerd" and rest.split()[0] != "Z" else None


def _stop_started_engine() -> None:
    pid = _started_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while _started_pid() == pid and time.monotonic() < deadline:
            time.sleep(0.2)
        if _started_pid() == pid:
            os.kill(pid, signal.SIGKILL)
    STARTED.unlink(missing_ok=True)


def _use() -> int:
    descriptor = os.open(USERS, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_SH)
    return descriptor


def _last_user(descriptor: int) -> bool:
    with contextlib.suppress(BlockingIOError):
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    return False


def _client() -> docker.DockerClient | None:
    try:
        client = docker.DockerClient(base_url=f"unix://{SOCKET}", version="auto", timeout=120)
        client.ping()
    except DockerException:
        return None
    return client


def start_engine(log: Path) -> Engine:
    """A client for a working engine; starts dockerd when none answers."""
    users = _use()
    client = _client()
    if client is not None:
        return Engine(client, None, users)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as stream:
        process = subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false"],
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    STARTED.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            os.close(users)
            raise RuntimeError(f"dockerd exited with {process.returncode}; see {log}")
        client = _client()
        if client is not None:
            return Engine(client, process, users)
        time.sleep(0.2)
    process.terminate()
    os.close(users)
    raise RuntimeError(f"dockerd did not answer on {SOCKET} within 60 s; see {log}")
