"""The engine's ports: the narrow interfaces it needs from the outside world, owned here so the
engine says what it needs and the adapters (and the hand-written test fakes) implement it.

Rule: nothing here imports an adapter; an adapter may import these types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class TagSource(Protocol):
    """The registry as the engine needs it: its name, for messages, and every tag."""

    @property
    def name(self) -> str: ...

    async def list_tags(self) -> list[str]:
        """Every tag of the repository, following pagination to the end."""
        ...


@dataclass(frozen=True)
class ServiceState:
    """One service's container as the Docker Engine reports it."""

    service: str
    container_id: str | None
    status: str
    health: str | None
    image: str
    started_at: str
    restart_count: int = 0
    finished_at: str = ""
    """When the container last stopped (Docker's ``State.FinishedAt``); empty when unknown."""

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def active(self) -> bool:
        """Running, or about to run again: in a restart policy's back-off (``restarting``), or
        paused. What ``compose stop`` has to stop before data is read or replaced."""
        return self.status in ("running", "restarting", "paused")

    @property
    def healthy(self) -> bool:
        """Running, and healthy when the image or compose file defines a healthcheck."""
        return self.running and self.health in (None, "healthy")

    def describe(self) -> str:
        if self.container_id is None:
            return f"{self.service}: no container"
        health = f", health {self.health}" if self.health else ""
        return f"{self.service}: {self.status}{health} ({self.image})"


class Deployment(Protocol):
    """The compose project: ``.env`` is its only write path, compose applies it. Only the
    *versioned services* (whose image is rendered from the version variable) are pulled and
    recreated by a version change."""

    def pinned_version(self) -> str | None:
        """The deployed version as compose sees it: the environment of this process over
        ``.env`` (``None`` when neither sets it)."""
        ...

    def pin(self, version: str) -> None:
        """Rewrite the version variable in ``.env`` atomically, keeping every other byte."""
        ...

    async def versioned_services(self, version: str) -> list[str]:
        """The services whose image changes with the version variable; ``DeploymentError``
        when none does."""
        ...

    async def versioned_images(self, version: str) -> dict[str, str]:
        """Each versioned service and the image it runs with ``version``."""
        ...

    async def pull(self, version: str) -> None:
        """Pull the versioned services' images for ``version``, without touching ``.env``."""
        ...

    async def ensure_images(self, version: str) -> None:
        """Make sure the versioned services' images for ``version`` are on the host, pulling
        only those missing."""
        ...

    async def up(self, version: str) -> None:
        """``docker compose up -d --no-deps`` of the versioned services with ``version``."""
        ...

    async def start(self, services: Sequence[str]) -> None:
        """Start the stopped containers of ``services`` as they are (no recreation)."""
        ...

    async def stop(self, services: Sequence[str]) -> None: ...

    async def app_services(self) -> list[str]:
        """Services to stop while data is restored: configured, or all but the database."""
        ...

    async def service_state(self, service: str) -> ServiceState: ...


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: str


class HttpProbe(Protocol):
    """One HTTP request for health and smoke checks; network failures raise ``OSError``."""

    async def request(self, method: str, url: str, timeout: float) -> HttpAnswer: ...


class BackupRecord(Protocol):
    """What the engine needs to know of a finished, valid backup."""

    @property
    def id(self) -> str: ...


class RestoreRecord(Protocol):
    @property
    def data_aside(self) -> object:
        """Where the replaced data dir was moved (a path), or ``None``."""
        ...


class Backups(Protocol):
    """Database dump plus data-dir archive, restore, and the schema fingerprint."""

    async def create(
        self,
        *,
        version: str | None,
        reason: str,
        protect: Sequence[str] = (),
        keep_set_aside: Sequence[str] = (),
        safety: bool = False,
    ) -> BackupRecord:
        """A new valid backup, or ``BackupError`` (and no backup marked valid). Retention after
        it never deletes the backups named in ``protect`` nor the set-aside trees (paths) in
        ``keep_set_aside``. A ``safety`` backup, taken just before a restore, is kept by age."""
        ...

    async def prepare_restore(self, backup_id: str) -> object:
        """``BackupError`` unless the backup is intact and can be restored; changes nothing."""
        ...

    def version_of(self, backup_id: str) -> str | None:
        """The version deployed when the backup was taken; ``BackupError`` when there is no
        such backup."""
        ...

    def data_aside_path(self, label: str) -> Path:
        """Where a restore labelled ``label`` sets aside what it replaces of the data dir: a
        free sibling name made from the time and the label; computing it creates nothing."""
        ...

    async def restore(
        self, backup_id: str, *, verify: bool = True, data_aside: Path | None = None
    ) -> RestoreRecord:
        """Restore the database and the data dir; the app services are already stopped.
        ``verify=False`` when ``prepare_restore`` has just checked the backup. What it replaces
        of the data dir goes to ``data_aside``; called again with the same ``data_aside`` after
        an interruption, it finishes the same restore (nothing of the data dir is deleted)."""
        ...

    async def fingerprint(self) -> str:
        """Identifies the database schema; changes when the schema does, not when rows do."""
        ...

    async def end_other_sessions(self) -> list[str]:
        """End every other client session of the database and wait until they are gone, so a
        statement a stopped app left running rolls back instead of committing later; the
        sessions ended, described. ``BackupError`` when the database refuses."""
        ...
