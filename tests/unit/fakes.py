"""Hand-written fakes behind the adapter Protocols, for engine unit tests.

The fake world: a deployment whose ``.env`` pin and running version are plain fields; releases
whose health and schema migration the test chooses; backups that snapshot the fake schema and
data; a clock that never waits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from specivod.domain.errors import BackupError, DeploymentError, RegistryUnavailable
from specivod.engine.ports import HttpAnswer, ServiceState

IMAGE = "127.0.0.1:5000/specivo/specivo"


@dataclass
class FakeRelease:
    healthy: bool = True
    schema: int | None = None
    """The schema version this release migrates the database to on start (None: no change)."""
    data_change: str | None = None
    """Text this release writes into the data dir on start."""


@dataclass
class World:
    """State shared by the fakes: what runs, what is stored."""

    pinned: str | None = "0.1.10"
    running: str | None = "0.1.10"
    container_serial: int = 1
    schema: int = 1
    data: str = "original data"
    rows: str = "original rows"
    releases: dict[str, FakeRelease] = field(default_factory=dict)
    stopped: bool = False
    calls: list[str] = field(default_factory=list)
    backups: dict[str, FakeBackup] = field(default_factory=dict)
    """Backups outlive a restart of specivod, like files on disk."""

    def release(self, version: str) -> FakeRelease:
        return self.releases.setdefault(version, FakeRelease())


class FakeDeployment:
    """Every versioned service runs the world's one running version; ``app_services`` are the
    services a restore stops."""

    def __init__(
        self,
        world: World,
        *,
        missing: Sequence[str] = (),
        up_fails: bool = False,
        versioned: Sequence[str] = ("api",),
        app_services: Sequence[str] = ("api",),
    ):
        self.world = world
        self.missing = set(missing)
        self.up_fails = up_fails
        self.versioned = list(versioned)
        self.app = list(app_services)

    def pinned_version(self) -> str | None:
        return self.world.pinned

    def pin(self, version: str) -> None:
        self.world.calls.append(f"pin {version}")
        self.world.pinned = version

    async def versioned_services(self, version: str) -> list[str]:
        return list(self.versioned)

    async def versioned_images(self, version: str) -> dict[str, str]:
        return {service: f"{IMAGE}:{version}" for service in self.versioned}

    async def pull(self, version: str) -> None:
        self.world.calls.append(f"pull {version}")
        if version in self.missing:
            raise DeploymentError(f"pull {version}: manifest unknown")

    async def ensure_images(self, version: str) -> None:
        self.world.calls.append(f"ensure images {version}")
        if version in self.missing:
            raise DeploymentError(f"pull {version}: registry unreachable")

    async def up(self, version: str) -> None:
        self.world.calls.append(f"up {version}")
        if self.up_fails:
            raise DeploymentError("compose up failed")
        if self.world.running != version or self.world.stopped:
            self.world.running = version
            self.world.container_serial += 1
            self.world.stopped = False
            release = self.world.release(version)
            if release.schema is not None and release.schema != self.world.schema:
                self.world.schema = release.schema
                self.world.rows = f"rows migrated by {version}"
            if release.data_change is not None:
                self.world.data = release.data_change

    async def stop(self, services: Sequence[str]) -> None:
        self.world.calls.append(f"stop {' '.join(services)}")
        self.world.stopped = True

    async def start(self, services: Sequence[str]) -> None:
        self.world.calls.append(f"start {' '.join(services)}")
        self.world.stopped = False

    async def app_services(self, _unused_database_service: str | None = None) -> list[str]:
        """The argument is ignored: accepted only until the engine calls ``app_services()``."""
        return list(self.app)

    async def service_state(self, service: str) -> ServiceState:
        world = self.world
        if world.running is None or world.stopped:
            return ServiceState(service, None, "absent", None, "", "")
        healthy = world.release(world.running).healthy
        return ServiceState(
            service=service,
            container_id=f"c{world.container_serial}",
            status="running",
            health="healthy" if healthy else "unhealthy",
            image=f"{IMAGE}:{world.running}",
            started_at=str(world.container_serial),
        )


@dataclass(frozen=True)
class FakeBackup:
    id: str
    schema: int
    data: str
    rows: str
    version: str | None = None


@dataclass(frozen=True)
class FakeRestore:
    data_aside: Path | None


class FakeBackups:
    def __init__(self, world: World, *, create_fails: bool = False, restore_fails: bool = False):
        self.world = world
        self.create_fails = create_fails
        self.restore_fails = restore_fails
        self.backups = world.backups
        self.restored: list[str] = []
        self.restore_arguments: list[tuple[str, bool, Path | None]] = []
        self.protected: list[list[str]] = []
        self.kept_set_aside: list[list[str]] = []
        self.safety: list[bool] = []
        self.sessions_ended_with_app_stopped: list[bool] = []

    async def create(
        self,
        *,
        version: str | None,
        reason: str,
        protect: Sequence[str] = (),
        keep_set_aside: Sequence[str] = (),
        safety: bool = False,
    ) -> FakeBackup:
        self.world.calls.append(f"backup ({reason})")
        self.protected.append(list(protect))
        self.kept_set_aside.append(list(keep_set_aside))
        self.safety.append(safety)
        if self.create_fails:
            raise BackupError("pg_dump exited with 1")
        backup = FakeBackup(
            f"b{len(self.backups) + 1}",
            self.world.schema,
            self.world.data,
            self.world.rows,
            version,
        )
        self.backups[backup.id] = backup
        return backup

    async def prepare_restore(self, backup_id: str) -> FakeBackup:
        self.world.calls.append(f"check backup {backup_id}")
        if backup_id not in self.backups:
            raise BackupError(f"no backup {backup_id}")
        return self.backups[backup_id]

    def data_aside_path(self, label: str) -> Path:
        return Path(f"/srv/data.replaced-{label}")

    def version_of(self, backup_id: str) -> str | None:
        if backup_id not in self.backups:
            raise BackupError(f"no backup {backup_id}")
        return self.backups[backup_id].version

    async def restore(
        self, backup_id: str, *, verify: bool = True, data_aside: Path | None = None
    ) -> FakeRestore:
        self.world.calls.append(f"restore {backup_id}")
        self.restore_arguments.append((backup_id, verify, data_aside))
        if self.restore_fails:
            raise BackupError("pg_restore failed")
        backup = self.backups[backup_id]
        self.world.schema, self.world.data, self.world.rows = (
            backup.schema,
            backup.data,
            backup.rows,
        )
        self.restored.append(backup_id)
        return FakeRestore(data_aside or Path(f"/srv/data.replaced-{backup_id}"))

    async def fingerprint(self) -> str:
        return f"schema-{self.world.schema}"

    async def end_other_sessions(self) -> list[str]:
        self.sessions_ended_with_app_stopped.append(self.world.stopped)
        return []


class FakeRegistry:
    def __init__(self, tags: Sequence[str], *, unavailable: bool = False) -> None:
        self.tags = list(tags)
        self.unavailable = unavailable
        self.reference = "127.0.0.1:5000/specivo/specivo"
        self.name = f"repository {self.reference}"

    async def list_tags(self) -> list[str]:
        if self.unavailable:
            raise RegistryUnavailable("connection refused")
        return list(self.tags)

    async def manifest_digest(self, tag: str) -> str:
        return f"sha256:{tag}"


class UnusedProbe:
    async def request(self, method: str, url: str, timeout: float) -> HttpAnswer:
        raise AssertionError("no HTTP check is configured in these tests")


class FakeClock:
    def __init__(self, start: datetime = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)) -> None:
        self.current = start
        self.slept = 0.0

    def now(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        return self.current.timestamp()

    async def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.current += timedelta(seconds=seconds)
