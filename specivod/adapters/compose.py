"""The deployment as docker compose sees it: pin a version in ``.env``, pull, ``up -d``, stop,
exec, and read each service's container and Docker health through the Docker SDK.

Rules: ``.env`` is the only file written; every compose call gets the version in its environment
explicitly (the shell environment beats ``.env`` in compose's interpolation, so a pull can fetch
the target before ``.env`` names it); containers are never recreated behind compose's back.
Only the *versioned services* — those whose rendered image changes with the version variable —
are pulled and recreated (``--no-deps``, never ``--remove-orphans``): a database or sidecar image
may exist only locally, or sit on a floating tag that must not move with an upgrade.
The deployed version is read one way everywhere (``deployed_version``): compose's own rule, the
environment of this process over ``.env``.
A command that fails while the Docker Engine does not answer is an engine outage: the engine is
waited for (``ENGINE_WAIT``) only when the transaction asks (``recover_from_outage``), and then
the containers its restart stopped are started again (see ``engine/engine_outage.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import docker
import requests
from docker.errors import DockerException, NotFound

from specivod.adapters import envfile
from specivod.adapters.process import CommandTimeout, Completed, run
from specivod.domain.errors import DeploymentError
from specivod.engine.engine_outage import stopped_since
from specivod.engine.ports import ServiceState
from specivod.settings import DeploymentSettings

log = logging.getLogger(__name__)
_PROBE_SUFFIX = "-specivod-probe"
_FRESH = 600.0
"""Seconds the versioned services found for unchanged project files are trusted."""
_warned_overrides: set[tuple[Path, str]] = set()
ENGINE_WAIT = 300.0
"""Seconds a transaction waits for a Docker Engine that went away to answer again."""
ENGINE_PING_TIMEOUT = 5
_ENGINE_GONE = ("Cannot connect to the Docker daemon", "Is the docker daemon running")
_WITHOUT_ENGINE = (("config",), ("version",))
"""Compose commands that succeed without the Docker Engine: no sign that it works."""


def engine_problem(
    environ: Mapping[str, str] | None = None, timeout: int = ENGINE_PING_TIMEOUT
) -> str | None:
    """``None`` when the Docker Engine (``DOCKER_HOST`` or the default socket) answers a ping,
    else why not. Blocking: call it from a thread in async code."""
    try:
        client = docker.DockerClient.from_env(
            version="auto",
            timeout=timeout,
            environment=dict(os.environ if environ is None else environ),
        )
    except (DockerException, requests.RequestException) as error:
        return f"the Docker Engine does not answer: {error}"
    try:
        client.ping()
    except (DockerException, requests.RequestException) as error:
        return f"the Docker Engine does not answer: {error}"
    finally:
        client.close()
    return None


def deployed_version(
    settings: DeploymentSettings, environ: Mapping[str, str] | None = None
) -> str | None:
    """The version compose runs: the variable from this process's environment, else ``.env``
    (``None`` when neither sets it). Warns once when the environment overrides ``.env``."""
    environment = os.environ if environ is None else environ
    variable = settings.version_variable
    if variable in environment and (settings.env_path, variable) not in _warned_overrides:
        _warned_overrides.add((settings.env_path, variable))
        log.warning(
            "%s=%s is set in this process's environment: compose uses it, and pinning %s "
            "will not change what compose runs from this environment",
            variable,
            environment[variable],
            settings.env_path,
        )
    try:
        return envfile.effective_variable(settings.env_path, variable, environment)
    except OSError as error:
        raise DeploymentError(f"cannot read {settings.env_path}: {error}") from None


def detect_compose_command() -> list[str]:
    """``docker compose`` (v2) when the plugin answers, else ``docker-compose`` (v1)."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise DeploymentError("neither `docker compose` (v2) nor `docker-compose` (v1) was found")


@dataclass
class _Rendered:
    signature: tuple[object, ...]
    at: float
    services: list[str]
    images: dict[str, dict[str, str]]
    """Per version, each versioned service's image."""


class ComposeDeployment:
    """A compose project on this host."""

    def __init__(
        self,
        settings: DeploymentSettings,
        *,
        environ: Mapping[str, str] | None = None,
        database_service: str = "db",
    ) -> None:
        self.settings = settings
        self.database_service = database_service
        self._command = list(settings.compose_command or detect_compose_command())
        self._timeout = settings.command_timeout.total_seconds()
        self._environ = dict(os.environ if environ is None else environ)
        self._docker: docker.DockerClient | None = None
        self._rendered: _Rendered | None = None
        self._last_contact: datetime | None = None
        self._unreachable_since: datetime | None = None
        self._back_at: datetime | None = None
        """The first engine contact that worked after ``_unreachable_since``: the outage ended
        there, and only what stopped between the two was stopped by it."""

    @property
    def env_path(self) -> Path:
        return self.settings.env_path

    def pinned_version(self) -> str | None:
        """The deployed version, as ``deployed_version`` reads it."""
        return deployed_version(self.settings, self._environ)

    def pin(self, version: str) -> None:
        try:
            envfile.rewrite_variable(self.env_path, self.settings.version_variable, version)
        except OSError as error:
            raise DeploymentError(f"cannot pin {version} in {self.env_path}: {error}") from None

    def data_dir(self) -> Path | None:
        value = envfile.effective_variable(
            self.env_path, self.settings.data_dir_variable, self._environ
        )
        if not value:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.settings.project_dir / path).resolve()

    def _arguments(self) -> list[str]:
        arguments = [*self._command, "--project-directory", str(self.settings.project_dir)]
        for compose_file in self.settings.compose_files:
            arguments += ["-f", compose_file]
        if self.settings.project_name:
            arguments += ["-p", self.settings.project_name]
        return [*arguments, "--env-file", str(self.env_path)]

    def _environment(self, version: str | None) -> dict[str, str]:
        environment = dict(self._environ)
        environment.pop("COMPOSE_REMOVE_ORPHANS", None)  # would remove the operator's containers
        pinned = version if version is not None else self.pinned_version()
        if pinned is not None:
            environment[self.settings.version_variable] = pinned
        return environment

    async def compose(
        self,
        *arguments: str,
        version: str | None = None,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        """Run one compose command; the result is returned whatever its exit code."""
        began = datetime.now(UTC)
        try:
            result = await run(
                [*self._arguments(), *arguments],
                cwd=self.settings.project_dir,
                env=self._environment(version),
                timeout=timeout or self._timeout,
                stdin=stdin,
                stdout=stdout,
            )
        except CommandTimeout as error:
            await self._failed_contact("")
            raise DeploymentError(str(error)) from None
        except OSError as error:
            raise DeploymentError(f"cannot run {self._command[0]}: {error}") from None
        if result.ok and arguments[:1] not in _WITHOUT_ENGINE:
            self._last_contact = datetime.now(UTC)
            if self._unreachable_since is not None and self._back_at is None:
                self._back_at = began  # what this command itself stopped is not the outage's
        elif not result.ok:
            await self._failed_contact(result.stderr)
        return result

    async def _failed_contact(self, message: str) -> None:
        """A command failed: an outage when the engine does not answer (or compose said so)."""
        if self._unreachable_since is not None:
            return
        gone = any(sign in message for sign in _ENGINE_GONE)
        if gone or await asyncio.to_thread(engine_problem, self._environ) is not None:
            self._unreachable_since = self._last_contact or datetime.now(UTC)
            log.warning(
                "the Docker Engine does not answer (last seen working %s)",
                self._unreachable_since.isoformat(timespec="seconds"),
            )

    async def recover_from_outage(self) -> str | None:
        """After an outage seen since the last call: wait for the engine (``ENGINE_WAIT``),
        start the containers that stopped since it was last seen working, and say so."""
        since = self._unreachable_since
        if since is None:
            return None
        waited = time.monotonic()
        while (problem := await asyncio.to_thread(engine_problem, self._environ)) is not None:
            if time.monotonic() - waited > ENGINE_WAIT:
                raise DeploymentError(
                    f"{problem}; waited {ENGINE_WAIT:.0f}s for it (unreachable since "
                    f"{since.isoformat(timespec='seconds')})"
                )
            await asyncio.sleep(1)
        back_at, self._unreachable_since, self._back_at = self._back_at, None, None
        self.close()  # a client of the engine before its restart
        states = [await self.service_state(service) for service in await self.services()]
        stopped = stopped_since(states, since, back_at)
        if stopped:
            await self._checked("start", *stopped)
            await self._until_healthy(stopped)
        started = (
            f"; started again what its restart stopped: {', '.join(stopped)}" if stopped else ""
        )
        return (
            f"the Docker Engine did not answer (last seen working "
            f"{since.isoformat(timespec='seconds')}) and is back after "
            f"{time.monotonic() - waited:.0f}s of waiting{started}"
        )

    async def _checked(self, *arguments: str, version: str | None = None) -> Completed:
        result = await self.compose(*arguments, version=version)
        if not result.ok:
            raise DeploymentError(result.describe([*self._command, *arguments]))
        return result

    async def _images(self, version: str) -> dict[str, str | None]:
        """Each service's image as ``docker compose config`` renders it with ``version``."""
        result = await self._checked("config", "--format", "json", version=version)
        try:
            services = json.loads(result.stdout)["services"]
            return {name: spec.get("image") for name, spec in services.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise DeploymentError(f"cannot read `compose config --format json`: {error}") from None

    def _files_signature(self) -> tuple[object, ...]:
        """Identifies the files compose likely reads (the compose files named, every YAML file
        of the project directory, ``.env``): a change invalidates the versioned services."""
        project = self.settings.project_dir
        paths = [project / name for name in self.settings.compose_files] + [self.env_path]
        with contextlib.suppress(OSError):
            paths += sorted(path for path in project.iterdir() if path.suffix in (".yml", ".yaml"))
        signature: list[object] = []
        for path in paths:
            try:
                status = path.stat()
            except OSError:
                signature.append((str(path), None))
            else:
                signature.append((str(path), status.st_ino, status.st_mtime_ns, status.st_size))
        return tuple(signature)

    async def _versioned(self, version: str) -> _Rendered:
        """The versioned services, found once for the project files as they are (rendering
        takes two ``compose config`` runs; a rollback's ``up`` should not wait for them)."""
        signature = self._files_signature()
        cached = self._rendered
        if cached and cached.signature == signature and time.monotonic() - cached.at < _FRESH:
            return cached
        images, probe = await asyncio.gather(
            self._images(version), self._images(version + _PROBE_SUFFIX)
        )
        versioned = {
            service: image
            for service, image in sorted(images.items())
            if image is not None and probe.get(service) != image
        }
        if not versioned:
            raise DeploymentError(
                f"no service's image changes with {self.settings.version_variable}: the compose "
                f"files must use ${{{self.settings.version_variable}}} in an image"
            )
        self._rendered = _Rendered(
            signature, time.monotonic(), list(versioned), {version: versioned}
        )
        return self._rendered

    async def versioned_images(self, version: str) -> dict[str, str]:
        """Each versioned service and the image it runs with ``version``."""
        rendered = await self._versioned(version)
        if version not in rendered.images:
            images = await self._images(version)
            rendered.images[version] = {
                service: image
                for service in rendered.services
                if (image := images.get(service)) is not None
            }
        return dict(rendered.images[version])

    async def versioned_services(self, version: str) -> list[str]:
        """The services whose rendered image changes with the version variable."""
        return list((await self._versioned(version)).services)

    async def pull(self, version: str) -> None:
        """Pull the versioned services' images as they will be with ``version`` pinned."""
        services = await self.versioned_services(version)
        await self._pulled(version, "pull", "--quiet", *services)

    async def ensure_images(self, version: str) -> None:
        """Pull the versioned services' images for ``version`` only where the host lacks them
        (``pull --policy missing``): a rollback checks its images before it stops anything,
        without depending on the registry when they are still here."""
        services = await self.versioned_services(version)
        await self._pulled(version, "pull", "--quiet", "--policy", "missing", *services)

    async def _pulled(self, version: str, *arguments: str) -> None:
        """A pull whose failure names the images and so the registry: dockerd's own words
        (``received unexpected HTTP status: 500``, ``toomanyrequests``) often name neither."""
        try:
            await self._checked(*arguments, version=version)
        except DeploymentError as error:
            images = ", ".join(sorted(set((await self.versioned_images(version)).values())))
            raise DeploymentError(f"cannot pull {images}: {error}") from None

    async def up(self, version: str) -> None:
        """``up -d --no-deps`` of the versioned services with ``version``; nothing else is
        recreated or removed."""
        services = await self.versioned_services(version)
        await self._checked("up", "--detach", "--no-deps", *services, version=version)

    async def start(self, services: Sequence[str]) -> None:
        """``compose start`` of those of ``services`` that have a container: compose refuses
        the whole command when one has none (never started, or removed by the operator)."""
        if not services:
            return
        listed = (await self._checked("ps", "--all", "--services", *services)).stdout.split()
        existing = [service for service in services if service in listed]
        if existing:
            await self._checked("start", *existing)

    async def stop(self, services: Sequence[str]) -> None:
        if services:
            await self._checked("stop", *services)

    async def services(self) -> list[str]:
        result = await self._checked("config", "--services")
        return [line for line in result.stdout.split() if line]

    async def app_services(self) -> list[str]:
        """The services to stop while data is restored: configured, or all but the database."""
        if self.settings.app_services:
            return list(self.settings.app_services)
        return [service for service in await self.services() if service != self.database_service]

    async def _until_healthy(self, services: Sequence[str]) -> None:
        """Wait (``ENGINE_WAIT`` at most) for ``services`` to be healthy, or running when they
        have no healthcheck: the step run again needs its database answering."""
        deadline = time.monotonic() + ENGINE_WAIT
        waiting = list(services)
        while waiting and time.monotonic() < deadline:
            states = [await self.service_state(service) for service in waiting]
            waiting = [state.service for state in states if not state.healthy]
            if waiting:
                await asyncio.sleep(1)

    def _client(self) -> docker.DockerClient:
        if self._docker is None:
            try:
                self._docker = docker.DockerClient.from_env(version="auto", timeout=60)
            except DockerException as error:
                raise DeploymentError(f"cannot reach the Docker Engine: {error}") from None
        return self._docker

    async def service_state(self, service: str) -> ServiceState:
        ids = (await self._checked("ps", "--all", "--quiet", service)).stdout.split()
        if not ids:
            return ServiceState(service, None, "absent", None, "", "")
        try:
            return await asyncio.to_thread(self._inspect, service, ids[0])
        except DeploymentError as error:
            await self._failed_contact(str(error))
            raise

    def _inspect(self, service: str, container_id: str) -> ServiceState:
        try:
            attrs: dict[str, Any] = self._client().api.inspect_container(container_id)
        except NotFound:
            return ServiceState(service, None, "absent", None, "", "")
        except (DockerException, requests.RequestException) as error:
            raise DeploymentError(
                f"cannot inspect {service} ({container_id[:12]}): {error}"
            ) from None
        state = attrs.get("State", {})
        health = state.get("Health") or {}
        return ServiceState(
            service=service,
            container_id=attrs["Id"],
            status=str(state.get("Status", "unknown")),
            health=health.get("Status"),
            image=str(attrs.get("Config", {}).get("Image", "")),
            started_at=str(state.get("StartedAt", "")),
            restart_count=int(attrs.get("RestartCount", 0)),
            finished_at=str(state.get("FinishedAt", "")),
        )

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()
            self._docker = None
