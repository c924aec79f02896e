"""A Specivo deployment directory the way operators have one: ``docker-compose.yml`` with ``api``
and ``db``, an ``.env`` pinning ``SPECIVO_VERSION`` (with comments, quotes and other variables),
a data dir with files, and a database with rows in it."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sandbox.images import ImageNames
from sandbox.releases import BASELINE
from tests.support.ports import free_port

COMPOSE_FILE = """\
services:
  db:
    image: ${SPECIVO_REGISTRY}/specivo/postgres:15
    network_mode: host
    environment:
      PGPORT: ${SPECIVO_DB_PORT}
    volumes:
      - dbdata:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD", "pg_isready", "-q", "-h", "127.0.0.1", "-p", "${SPECIVO_DB_PORT}"]
      interval: 1s
      timeout: 2s
      retries: 60
  api:
    image: ${SPECIVO_REGISTRY}/specivo/specivo:${SPECIVO_VERSION}
    network_mode: host
    restart: unless-stopped
    depends_on:
      db:
        condition: service_healthy
    environment:
      SPECIVO_DB_PORT: ${SPECIVO_DB_PORT}
      SPECIVO_API_PORT: ${SPECIVO_API_PORT}
    volumes:
      - ${SPECIVO_DATA_DIR}:/data
volumes:
  dbdata: {}
"""

ENV_TEMPLATE = """\
# Specivo, pinned release. Upgrade one minor version at a time; read the release notes first.
SPECIVO_VERSION={version}

# Where uploads and search indexes live
SPECIVO_DATA_DIR="{data_dir}"
SPECIVO_REGISTRY={registry}
SPECIVO_DB_PORT={db_port}   # PostgreSQL on loopback
SPECIVO_API_PORT={api_port}
export SPECIVO_SECRET='not-a-secret # with a hash inside quotes'
"""

SEED_ROWS = (
    "INSERT INTO issues (title, body) "
    "SELECT 'issue ' || n, repeat('body text ', n % 50) FROM generate_series(1, 200) AS n"
)


@dataclass
class SandboxDeployment:
    directory: Path
    data_dir: Path
    db_port: int
    api_port: int
    images: ImageNames

    @property
    def env_file(self) -> Path:
        return self.directory / ".env"

    @property
    def project(self) -> str:
        return self.directory.name

    def compose(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "compose", "--project-directory", str(self.directory), *arguments],
            cwd=self.directory,
            capture_output=True,
            text=True,
            check=check,
            env={k: v for k, v in os.environ.items() if not k.startswith("SPECIVO_")},
        )

    def psql(self, sql: str) -> str:
        result = self.compose(
            "exec",
            "-T",
            "db",
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "specivo",
            "-d",
            "specivo",
            "-v",
            "ON_ERROR_STOP=1",
            "-qAt",
            "-c",
            sql,
        )
        return result.stdout.strip()

    def table_checksum(self) -> str:
        """One hash over every row of every table the app owns, in a stable order."""
        tables = self.psql(
            "SELECT string_agg(tablename, ' ' ORDER BY tablename) FROM pg_tables "
            "WHERE schemaname = 'public'"
        ).split()
        row_hash = "md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
        parts = [f"{table}:" + self.psql(f"SELECT {row_hash} FROM {table} t") for table in tables]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def schema_version(self) -> int:
        return int(self.psql("SELECT max(version) FROM schema_migrations"))

    def data_hashes(self, root: Path | None = None) -> dict[str, str]:
        base = root or self.data_dir
        return {
            str(path.relative_to(base)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(base.rglob("*"))
            if path.is_file()
        }

    def api(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")
        except OSError as error:
            return 0, str(error)

    def running_version(self) -> str:
        status, body = self.api("/version")
        return body.strip() if status == 200 else ""

    def api_container(self) -> dict[str, object]:
        """``docker inspect`` of the api container (id, State with Health and StartedAt)."""
        container_id = self.compose("ps", "-q", "api").stdout.strip()
        if not container_id:
            return {}
        inspected = subprocess.run(
            ["docker", "inspect", container_id], capture_output=True, text=True, check=True
        )
        result: dict[str, object] = json.loads(inspected.stdout)[0]
        return result

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "3", check=False)


def create_deployment(
    root: Path,
    images: ImageNames,
    version: str = BASELINE,
    *,
    compose_file: str = COMPOSE_FILE,
    env_extra: Mapping[str, str] | None = None,
) -> SandboxDeployment:
    """Write a deployment under ``root``, start it at ``version`` and fill it with data.
    ``compose_file`` replaces the default shape; ``env_extra`` adds lines to ``.env``."""
    directory = root / f"spv{secrets.token_hex(4)}"
    data_dir = directory / "data"
    (data_dir / "attachments").mkdir(parents=True)
    for number in range(1, 6):
        (data_dir / "attachments" / f"file{number}.txt").write_text(f"attachment {number}\n" * 50)
    (data_dir / "FORMAT").write_text("format 1\n")
    deployment = SandboxDeployment(directory, data_dir, free_port(), free_port(), images)
    (directory / "docker-compose.yml").write_text(compose_file)
    extra = "".join(f"{name}={value}\n" for name, value in (env_extra or {}).items())
    deployment.env_file.write_text(
        ENV_TEMPLATE.format(
            version=version,
            data_dir=data_dir,
            registry=images.registry,
            db_port=deployment.db_port,
            api_port=deployment.api_port,
        )
        + extra
    )
    deployment.env_file.chmod(0o640)
    result = deployment.compose("up", "-d", "--wait", "--quiet-pull", check=False)
    if result.returncode != 0:
        logs = deployment.compose("logs", "--no-color", check=False).stdout
        deployment.down()
        raise RuntimeError(f"sandbox deployment did not start: {result.stderr}\n{logs}")
    deployment.psql(SEED_ROWS)
    return deployment
