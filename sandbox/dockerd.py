"""A Docker Engine for the sandbox: reuse a running one, or start dockerd as STACK.md says
(no bridge, no iptables: every container uses the host network on loopback)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException

SOCKET = Path("/var/run/docker.sock")


@dataclass
class Engine:
    client: docker.DockerClient
    process: subprocess.Popen[bytes] | None

    def stop(self) -> None:
        self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _client() -> docker.DockerClient | None:
    try:
        client = docker.DockerClient(base_url=f"unix://{SOCKET}", version="auto", timeout=120)
        client.ping()
    except DockerException:
        return None
    return client


def start_engine(log: Path) -> Engine:
    """A client for a working engine; starts dockerd when none answers."""
    client = _client()
    if client is not None:
        return Engine(client, None)
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
            raise RuntimeError(f"dockerd exited with {process.returncode}; see {log}")
        client = _client()
        if client is not None:
            return Engine(client, process)
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"dockerd did not answer on {SOCKET} within 60 s; see {log}")
