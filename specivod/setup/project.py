"""Reads a compose project for ``specivod init``: its documents from ``docker compose config``
(as written and as rendered) and, for each rendered image of a service, whether the image on
this host declares a HEALTHCHECK.

Rule: read only. Compose runs with the project's ``.env`` and this process's environment, the
way the operator's own ``docker compose`` does; nothing is pulled, started or written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specivod.adapters.compose import detect_compose_command
from specivod.adapters.process import CommandTimeout, run
from specivod.setup.discovery import ProjectDocuments, SetupError

_TIMEOUT = 120.0


@dataclass(frozen=True)
class ComposeProject:
    """Where the project is and how compose is told about it (``-f``, ``-p``, ``--env-file``)."""

    directory: Path
    files: Sequence[str] = ()
    project_name: str | None = None
    env_file: Path = Path(".env")
    command: Sequence[str] | None = None
    environ: Mapping[str, str] | None = field(default=None, repr=False)

    @property
    def env_path(self) -> Path:
        return self.directory / self.env_file

    def arguments(self) -> list[str]:
        command = list(self.command or detect_compose_command())
        arguments = [*command, "--project-directory", str(self.directory)]
        for name in self.files:
            arguments += ["-f", name]
        if self.project_name:
            arguments += ["-p", self.project_name]
        if self.env_path.exists():
            arguments += ["--env-file", str(self.env_path)]
        return arguments


async def _json(command: Sequence[str], cwd: Path, environ: Mapping[str, str] | None) -> Any:
    try:
        result = await run(command, cwd=cwd, env=environ, timeout=_TIMEOUT)
    except (OSError, CommandTimeout) as error:
        raise SetupError(f"cannot run {command[0]}: {error}") from None
    if not result.ok:
        raise SetupError(result.describe())
    try:
        return json.loads(result.stdout)
    except ValueError as error:
        raise SetupError(f"`{' '.join(command[:3])}` printed no JSON: {error}") from None


async def _has_healthcheck(image: str, cwd: Path, environ: Mapping[str, str] | None) -> bool | None:
    command = ["docker", "image", "inspect", "--format", "{{json .Config.Healthcheck}}", image]
    try:
        result = await run(command, cwd=cwd, env=environ, timeout=_TIMEOUT)
    except (OSError, CommandTimeout):
        return None
    if not result.ok:
        return None
    try:
        check = json.loads(result.stdout)
    except ValueError:
        return None
    test = check.get("Test") if isinstance(check, dict) else None
    return bool(test) and test != ["NONE"]


async def read_project(project: ComposeProject) -> ProjectDocuments:
    """The project's documents, or ``SetupError`` naming what compose said."""
    if not project.directory.is_dir():
        raise SetupError(f"{project.directory}: not a directory")
    config = [*project.arguments(), "config", "--format", "json"]
    cwd, environ = project.directory, project.environ
    raw = await _json([*config, "--no-interpolate"], cwd, environ)
    rendered = await _json(config, cwd, environ)
    images = {
        str(spec["image"])
        for spec in (rendered.get("services") or {}).values()
        if isinstance(spec, dict) and spec.get("image")
    }
    checks = {image: await _has_healthcheck(image, cwd, environ) for image in sorted(images)}
    return ProjectDocuments(raw=raw, rendered=rendered, image_healthchecks=checks)
