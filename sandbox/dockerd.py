"""A Docker Engine for the sandbox: reuse a running one, or start dockerd as STACK.md says
(no bridge, no iptables: every container uses the host network on loopback).

Every session using the engine holds a shared ``flock`` on ``USERS`` while it does; the session
that started dockerd stops it only when it can take that lock exclusively, so a test session
never pulls the engine from under another one running on the same machine."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException

SOCKET = Path("/var/run/docker.sock")
USERS = Path("/run/specivod-sandbox-engine.lock")


@dataclass
class Engine:
    client: docker.DockerClient
    process: subprocess.Popen[bytes] | None
    users: int
    """This session's descriptor of ``USERS``, locked shared."""

    def stop(self) -> None:
        self.client.close()
        try:
            if self.process is not None and self.process.poll() is None and _last_user(self.users):
                self.process.terminate()
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            os.close(self.users)


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
