"""The compose adapter turns every failure of the host into a ``DeploymentError`` the engine
handles; none escapes as a bare ``OSError``."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

import pytest

from specivod.adapters.compose import ComposeDeployment
from specivod.domain.errors import DeploymentError
from specivod.settings import DeploymentSettings


def _deployment(tmp_path: Path) -> ComposeDeployment:
    settings = DeploymentSettings(project_dir=tmp_path, compose_command=["docker", "compose"])
    return ComposeDeployment(settings, environ={})


def test_a_full_disk_while_pinning_is_a_deployment_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("SPECIVO_VERSION=0.1.10\n")

    def no_space(*_args: object, **_kwargs: object) -> tuple[int, str]:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", no_space)

    with pytest.raises(DeploymentError, match=r"cannot pin 0\.2\.0 in .*\.env: .*No space"):
        _deployment(tmp_path).pin("0.2.0")
    assert (tmp_path / ".env").read_text() == "SPECIVO_VERSION=0.1.10\n"


def test_an_unreadable_env_file_is_a_deployment_error(tmp_path: Path) -> None:
    (tmp_path / ".env").mkdir()
    with pytest.raises(DeploymentError, match=r"\.env: cannot read"):
        _deployment(tmp_path).pinned_version()


async def test_a_compose_command_that_cannot_run_is_a_deployment_error(tmp_path: Path) -> None:
    settings = DeploymentSettings(
        project_dir=tmp_path, compose_command=[str(tmp_path / "no-such-compose")]
    )
    with pytest.raises(DeploymentError, match="cannot run"):
        await ComposeDeployment(settings, environ={}).pull("0.2.0")
