"""Fixtures shared by every suite. The real stack (Docker Engine, registry, sandbox images) is
started once per session, the first time a test asks for it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.config import specivod_config, write_config
from sandbox.deployment import SandboxDeployment, create_deployment
from sandbox.dockerd import Engine, start_engine
from sandbox.images import ImageNames, build_and_push
from tests.support.registry import RegistryProcess, start_registry


@dataclass
class Stack:
    engine: Engine
    registry: RegistryProcess
    images: ImageNames


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    engine = start_engine(root / "dockerd.log")
    registry = start_registry(root / "registry")
    try:
        images = build_and_push(engine.client, registry.address)
        yield Stack(engine, registry, images)
    finally:
        registry.stop()
        engine.stop()


@pytest.fixture
def deployment(stack: Stack, tmp_path: Path) -> Iterator[SandboxDeployment]:
    created = create_deployment(tmp_path, stack.images)
    try:
        yield created
    finally:
        created.down()


@dataclass
class Specivod:
    """The real ``specivod`` command against one sandbox deployment."""

    config: Path

    def __call__(self, *arguments: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
        return subprocess.run(
            [sys.executable, "-m", "specivod", "--config", str(self.config), *arguments],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environment,
            check=False,
        )


@pytest.fixture
def specivod(deployment: SandboxDeployment, tmp_path: Path) -> Specivod:
    config = specivod_config(deployment, tmp_path)
    return Specivod(write_config(tmp_path / "specivod.toml", config))
