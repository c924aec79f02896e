"""Fixtures shared by every suite. The real stack (Docker Engine, registry, sandbox images) is
started once per session, the first time a test asks for it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
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

    def __call__(
        self, *arguments: str, timeout: float = 300, crash_after: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``specivod --config CONFIG arguments...``; with ``crash_after`` (a state name),
        the process kills itself with SIGKILL right after journaling that state."""
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
        runner = ["tests.e2e.crash_runner", crash_after] if crash_after else ["specivod"]
        return subprocess.run(
            [sys.executable, "-m", *runner, "--config", str(self.config), *arguments],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environment,
            check=False,
            cwd=Path(__file__).parent.parent,
        )


SpecivodFactory = Callable[..., Specivod]


@pytest.fixture
def specivod_with(deployment: SandboxDeployment, tmp_path: Path) -> SpecivodFactory:
    """``specivod_with(backup={"keep": 1})``: the CLI with some config sections changed."""

    def make(**sections: dict[str, object] | list[object]) -> Specivod:
        config = specivod_config(deployment, tmp_path, **sections)
        return Specivod(write_config(tmp_path / "specivod.toml", config))

    return make


@pytest.fixture
def specivod(specivod_with: SpecivodFactory) -> Specivod:
    return specivod_with()
