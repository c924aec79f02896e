"""The compose adapter turns every failure of the host into a ``DeploymentError`` the engine
handles; none escapes as a bare ``OSError``. It pulls and recreates only the versioned services
(a hand-written fake compose command records what it is asked), and reads the deployed version
the way compose does."""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import pytest

from specivod.adapters.compose import ComposeDeployment, deployed_version
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


FAKE_COMPOSE = """\
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_COMPOSE_LOG"], "a") as log:
    log.write(json.dumps({"args": args, "version": os.environ.get("SPECIVO_VERSION"),
                          "orphans": os.environ.get("COMPOSE_REMOVE_ORPHANS")}) + "\\n")
if "pull" in args and os.environ.get("FAKE_COMPOSE_PULL_ERROR"):
    sys.exit(os.environ["FAKE_COMPOSE_PULL_ERROR"])
if "ps" in args:
    containers = json.loads(os.environ.get("FAKE_COMPOSE_CONTAINERS", "[]"))
    print("\\n".join(s for s in args[args.index("ps") + 1 :] if s in containers))
elif "config" in args:
    version = os.environ.get("SPECIVO_VERSION") or "release"
    images = json.loads(os.environ["FAKE_COMPOSE_IMAGES"])
    services = {name: ({"image": image.replace("{v}", version)} if image else {})
                for name, image in images.items()}
    if "--services" in args:
        print("\\n".join(services))
    else:
        print(json.dumps({"name": "p", "services": services}))
"""

SHAPED = {
    "db": "127.0.0.1:5000/specivo/postgres:15@sha256:" + "a" * 64,
    "api": "127.0.0.1:5000/specivo/specivo:{v}",
    "worker": "127.0.0.1:5000/specivo/specivo:{v}",
    "cache": "local/cache:1",
    "sidecar": "busybox:latest",
    "built": None,
}


class FakeCompose:
    """A compose command that records its argv and renders ``images`` with the version."""

    def __init__(self, tmp_path: Path, images: dict[str, str | None]) -> None:
        self.script = tmp_path / "fake-compose.py"
        self.script.write_text(FAKE_COMPOSE)
        self.log = tmp_path / "compose.log"
        self.environ = {
            "FAKE_COMPOSE_LOG": str(self.log),
            "FAKE_COMPOSE_IMAGES": json.dumps(images),
            "COMPOSE_REMOVE_ORPHANS": "true",
            "PATH": os.environ["PATH"],
        }
        (tmp_path / ".env").write_text("SPECIVO_VERSION=0.1.10\n")

    def deployment(self, tmp_path: Path, **settings: object) -> ComposeDeployment:
        deployment = DeploymentSettings.model_validate(
            {
                "project_dir": tmp_path,
                "compose_command": [sys.executable, str(self.script)],
                **settings,
            }
        )
        return ComposeDeployment(deployment, environ=self.environ, database_service="db")

    def calls(self) -> list[dict[str, object]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [json.loads(line) for line in lines]

    def commands(self) -> list[list[str]]:
        """Each call's arguments after the global options (``--env-file PATH``)."""
        result = []
        for call in self.calls():
            args = call["args"]
            assert isinstance(args, list)
            result.append(args[args.index("--env-file") + 2 :])
        return result


async def test_versioned_services_are_those_whose_image_the_version_renders(
    tmp_path: Path,
) -> None:
    compose = FakeCompose(tmp_path, SHAPED)

    versioned = await compose.deployment(tmp_path).versioned_services("0.2.0")

    assert versioned == ["api", "worker"]
    rendered_with = sorted(str(call["version"]) for call in compose.calls())
    assert rendered_with == ["0.2.0", "0.2.0-specivod-probe"]


async def test_versioned_services_are_found_once_while_the_project_files_are_unchanged(
    tmp_path: Path,
) -> None:
    compose = FakeCompose(tmp_path, SHAPED)
    compose_file = tmp_path / "docker-compose.yml"
    compose_file.write_text("services: {}\n")
    adapter = compose.deployment(tmp_path)

    def renders() -> int:
        return sum(args[0] == "config" for args in compose.commands())

    await adapter.pull("0.2.0")
    await adapter.up("0.2.0")
    await adapter.up("0.1.10")
    assert renders() == 2, "a rollback's up does not wait for compose config"

    images = await adapter.versioned_images("0.1.10")
    assert images == {
        "api": "127.0.0.1:5000/specivo/specivo:0.1.10",
        "worker": "127.0.0.1:5000/specivo/specivo:0.1.10",
    }
    assert renders() == 3

    compose_file.write_text("services: {edited: {}}\n")
    await adapter.versioned_services("0.2.0")
    assert renders() == 5, "an edited compose file is read again"


async def test_pull_and_up_touch_only_the_versioned_services_and_never_remove_orphans(
    tmp_path: Path,
) -> None:
    compose = FakeCompose(tmp_path, SHAPED)
    adapter = compose.deployment(tmp_path)

    await adapter.pull("0.2.0")
    await adapter.up("0.2.0")

    acting = [args for args in compose.commands() if args[0] != "config"]
    assert acting == [
        ["pull", "--quiet", "api", "worker"],
        ["up", "--detach", "--no-deps", "api", "worker"],
    ]
    assert all(call["version"] in ("0.2.0", "0.2.0-specivod-probe") for call in compose.calls())
    assert all(call["orphans"] is None for call in compose.calls())


async def test_a_failed_pull_names_the_images_it_pulled(tmp_path: Path) -> None:
    compose = FakeCompose(tmp_path, SHAPED)
    compose.environ["FAKE_COMPOSE_PULL_ERROR"] = "toomanyrequests: retry later"
    adapter = compose.deployment(tmp_path)

    with pytest.raises(DeploymentError) as failed:
        await adapter.pull("0.2.0")
    message = str(failed.value)
    assert message.startswith("cannot pull 127.0.0.1:5000/specivo/specivo:0.2.0: "), message
    assert "toomanyrequests" in message
    with pytest.raises(DeploymentError, match=r"cannot pull .*:0\.1\.10: .*toomanyrequests"):
        await adapter.ensure_images("0.1.10")


async def test_a_version_that_changes_no_image_is_an_error_naming_the_variable(
    tmp_path: Path,
) -> None:
    compose = FakeCompose(tmp_path, {"db": "postgres:16", "api": "specivo/specivo:latest"})
    adapter = compose.deployment(tmp_path)

    with pytest.raises(DeploymentError, match=r"no service's image changes with SPECIVO_VERSION"):
        await adapter.pull("0.2.0")
    assert [args[0] for args in compose.commands()] == ["config", "config"], "nothing pulled"


async def test_start_starts_the_services_named_that_have_a_container(tmp_path: Path) -> None:
    compose = FakeCompose(tmp_path, SHAPED)
    compose.environ["FAKE_COMPOSE_CONTAINERS"] = json.dumps(["db", "cache", "api"])
    adapter = compose.deployment(tmp_path)

    await adapter.start(["cache", "sidecar"])
    await adapter.start([])

    assert compose.commands() == [
        ["ps", "--all", "--services", "cache", "sidecar"],
        ["start", "cache"],
    ]


async def test_app_services_are_all_but_the_database_named_at_construction(
    tmp_path: Path,
) -> None:
    compose = FakeCompose(tmp_path, SHAPED)
    adapter = ComposeDeployment(
        DeploymentSettings(
            project_dir=tmp_path, compose_command=[sys.executable, str(compose.script)]
        ),
        environ=compose.environ,
        database_service="cache",
    )

    assert await adapter.app_services() == ["db", "api", "worker", "sidecar", "built"]
    assert await compose.deployment(tmp_path, app_services=["api"]).app_services() == ["api"]


def test_the_deployed_version_is_what_compose_uses_and_an_override_is_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / ".env").write_text("SPECIVO_VERSION=0.1.10\n")
    settings = DeploymentSettings(project_dir=tmp_path, compose_command=["docker", "compose"])

    assert deployed_version(settings, {}) == "0.1.10"
    assert not caplog.records

    overridden = ComposeDeployment(settings, environ={"SPECIVO_VERSION": "0.2.0"})
    assert overridden.pinned_version() == "0.2.0"
    assert deployed_version(settings, {"SPECIVO_VERSION": "0.2.0"}) == "0.2.0"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "SPECIVO_VERSION=0.2.0 is set in this process's environment" in warnings[0]
    assert "will not change what compose runs" in warnings[0]
