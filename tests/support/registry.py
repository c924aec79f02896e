"""A real CNCF distribution registry (Debian's ``docker-registry``) on loopback, with optional
htpasswd or token auth. Tests start one per need; ``stop()`` kills it and its storage goes with the
work directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port

REGISTRY_BINARY = "docker-registry"


@dataclass(frozen=True)
class TokenAuthConfig:
    realm: str
    service: str
    issuer: str
    root_cert_bundle: Path


@dataclass
class RegistryProcess:
    address: str
    root: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def registry_available() -> bool:
    return shutil.which(REGISTRY_BINARY) is not None


def start_registry(
    workdir: Path,
    *,
    htpasswd: Path | None = None,
    token: TokenAuthConfig | None = None,
    port: int | None = None,
) -> RegistryProcess:
    """Start a registry storing under ``workdir`` and wait until ``/v2/`` answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{port or free_port()}"
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "storage")},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {"addr": address, "secret": "specivod-tests"},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "specivod-tests", "path": str(htpasswd)}}
    if token is not None:
        config["auth"] = {
            "token": {
                "realm": token.realm,
                "service": token.service,
                "issuer": token.issuer,
                "rootcertbundle": str(token.root_cert_bundle),
            }
        }
    config_path = workdir / "config.yml"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    log = workdir / "registry.log"
    with log.open("wb") as log_stream:
        process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config_path)],
            stdout=log_stream,
            stderr=subprocess.STDOUT,
        )
    registry = RegistryProcess(address=address, root=workdir, process=process, log=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"registry exited: {log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{registry.url}/v2/", timeout=1):
                return registry
        except urllib.error.HTTPError as error:
            if error.code == 401:
                return registry
        except OSError:
            pass
        time.sleep(0.1)
    registry.stop()
    raise RuntimeError(f"registry did not answer on {address}: {log.read_text(errors='replace')}")
