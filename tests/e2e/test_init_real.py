"""``specivod init`` on real sandbox compose projects (the real Docker Engine, Compose v2 and
registry): the config it writes passes ``config check``, and with it ``check`` reads the
deployment and the registry and ``upgrade`` installs a release; a second init refuses to
overwrite. The shaped project (``sandbox/shapes.py``) has two versioned services with a default
in the tag, a db pinned by digest, a local-only image and a sidecar on a floating tag."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.deployment import SandboxDeployment
from sandbox.releases import BASELINE, HEALTHY_UPGRADE, SHAPES_REPOSITORY
from sandbox.shapes import ShapedDeployment, create_shaped_deployment
from tests.conftest import Stack

pytestmark = pytest.mark.stack


@pytest.fixture
def shaped(stack: Stack, tmp_path: Path) -> Iterator[ShapedDeployment]:
    created = create_shaped_deployment(tmp_path, stack.engine.client, stack.images)
    try:
        yield created
    finally:
        created.deployment.down()


def _specivod(
    config: Path, *arguments: str, state: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The real CLI; with ``state``, the journal and backups go under it (via the environment,
    so the config stays as init wrote it)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
    if state is not None:
        environment["SPECIVOD_STATE__DIR"] = str(state / "state")
        environment["SPECIVOD_BACKUP__DIR"] = str(state / "backups")
    return subprocess.run(
        [sys.executable, "-m", "specivod", "--config", str(config), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        check=False,
        cwd=Path(__file__).parent.parent,
    )


def _said(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def test_init_writes_a_config_with_which_check_and_upgrade_work(
    deployment: SandboxDeployment, stack: Stack, tmp_path: Path
) -> None:
    config = tmp_path / "etc" / "specivod.toml"
    made = _specivod(config, "init", str(deployment.directory))
    assert made.returncode == 0, _said(made)
    written = config.read_text()
    data = tomllib.loads(written)
    assert data["registry"]["image"] == stack.images.app
    assert data["deployment"]["project_dir"] == str(deployment.directory)
    assert data["deployment"]["version_variable"] == "SPECIVO_VERSION"
    assert data["deployment"]["data_dir_variable"] == "SPECIVO_DATA_DIR"
    assert data["health"]["service"] == "api"
    assert data["backup"]["database_service"] == "db"
    assert data["policy"]["range"] == f">={BASELINE} <1.0.0"
    assert "# The registry lists " in written
    assert f"(now {BASELINE})" in written
    assert "from its image's HEALTHCHECK" in written

    checked = _specivod(config, "config", "check")
    assert checked.returncode == 0, _said(checked)
    check = _specivod(config, "check", "--json", state=tmp_path)
    assert check.returncode == 0, _said(check)
    report = json.loads(check.stdout)
    assert report["deployed"] == BASELINE
    assert HEALTHY_UPGRADE in report["candidates"]

    upgraded = _specivod(config, "upgrade", "--now", "--to", HEALTHY_UPGRADE, state=tmp_path)
    assert upgraded.returncode == 0, _said(upgraded)
    assert deployment.running_version() == HEALTHY_UPGRADE
    assert f"SPECIVO_VERSION={HEALTHY_UPGRADE}\n" in deployment.env_file.read_text()

    again = _specivod(config, "init", str(deployment.directory))
    assert again.returncode == 1, _said(again)
    assert "never overwrites" in again.stderr
    assert config.read_text() == written


def test_init_describes_a_project_shaped_like_real_ones(
    shaped: ShapedDeployment, stack: Stack, tmp_path: Path
) -> None:
    config = tmp_path / "specivod.toml"
    made = _specivod(config, "init", str(shaped.deployment.directory))
    assert made.returncode == 0, _said(made)
    written = config.read_text()
    data = tomllib.loads(written)
    assert data["registry"]["image"] == f"{stack.registry.address}/{SHAPES_REPOSITORY}"
    assert f"# api, worker run {data['registry']['image']}:${{SPECIVO_VERSION}}" in written
    assert data["health"]["service"] == "api"
    assert data["backup"]["database_service"] == "db"
    assert data["deployment"]["data_dir_variable"] == "SPECIVO_DATA_DIR"
    assert re.search(
        r"# The registry lists \d+ tag\(s\); the highest version is 0\.2\.6\.", written
    )

    checked = _specivod(config, "config", "check")
    assert checked.returncode == 0, _said(checked)
    check = _specivod(config, "check", "--json", state=tmp_path)
    assert check.returncode == 0, _said(check)
    assert json.loads(check.stdout)["deployed"] == BASELINE
