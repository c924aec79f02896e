"""A deployment shaped like real self-hosted compose files (STACK.md, "Compose shapes"): ``api``
and ``worker`` run one image rendered from ``${SPECIVO_VERSION:-release}``, with
``container_name``; ``env_file: .env`` on db and api; the db pinned by digest; a cache image that
exists only on this host (never pushed); a sidecar on a floating tag. Host networking and
loopback ports, like every sandbox deployment; the worker serves its health on its own port.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import docker

from sandbox.deployment import SandboxDeployment, create_deployment
from sandbox.images import BASE, ImageNames, push_image, push_releases
from sandbox.releases import BASELINE, SHAPES_RELEASES, SHAPES_REPOSITORY
from tests.support.ports import free_port

LOCAL_ONLY = "local/specivo-cache:1"
SIDECAR_PATH = "specivo-shapes/sidecar"
SLEEPER = 'CMD ["/bin/sleep", "2147483647"]'

SHAPED_COMPOSE = """\
services:
  db:
    image: {db_image}
    container_name: ${{SPECIVO_INSTANCE}}-db
    network_mode: host
    env_file: .env
    environment:
      PGPORT: ${{SPECIVO_DB_PORT}}
    volumes:
      - dbdata:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD", "pg_isready", "-q", "-h", "127.0.0.1", "-p", "${{SPECIVO_DB_PORT}}"]
      interval: 1s
      timeout: 2s
      retries: 60
  api:
    image: ${{SPECIVO_REGISTRY}}/{app_path}:${{SPECIVO_VERSION:-release}}
    container_name: ${{SPECIVO_INSTANCE}}-server
    network_mode: host
    restart: unless-stopped
    env_file: .env
    depends_on:
      db:
        condition: service_healthy
    environment:
      SPECIVO_DB_PORT: ${{SPECIVO_DB_PORT}}
      SPECIVO_API_PORT: ${{SPECIVO_API_PORT}}
    volumes:
      - ${{SPECIVO_DATA_DIR}}:/data
    healthcheck:
      disable: false
  worker:
    image: ${{SPECIVO_REGISTRY}}/{app_path}:${{SPECIVO_VERSION:-release}}
    container_name: ${{SPECIVO_INSTANCE}}-worker
    network_mode: host
    restart: unless-stopped
    depends_on:
      db:
        condition: service_healthy
    environment:
      SPECIVO_ROLE: worker
      SPECIVO_DB_PORT: ${{SPECIVO_DB_PORT}}
      SPECIVO_API_PORT: ${{SPECIVO_WORKER_PORT}}
    volumes:
      - ${{SPECIVO_DATA_DIR}}:/data
  cache:
    image: {local_only}
    network_mode: host
    stop_signal: SIGKILL
    command: ["/bin/sleep", "2147483647"]
  sidecar:
    image: ${{SPECIVO_REGISTRY}}/{sidecar_path}:latest
    network_mode: host
    stop_signal: SIGKILL
volumes:
  dbdata: {{}}
"""

ORPHAN_COMPOSE = f"""\
services:
  operator-tool:
    image: {LOCAL_ONLY}
    network_mode: host
    stop_signal: SIGKILL
    command: ["/bin/sleep", "2147483647"]
"""


@dataclass(frozen=True)
class ShapeImages:
    names: ImageNames
    """``names.app`` is the shapes repository (its releases: ``SHAPES_RELEASES``)."""
    db_by_digest: str
    sidecar: str
    sidecar_first: str
    """The image id ``sidecar`` had when the deployments were created."""


_prepared: dict[str, ShapeImages] = {}


def prepare_images(client: docker.DockerClient, images: ImageNames) -> ShapeImages:
    """Once per registry: push the shapes releases and the sidecar, tag the local-only image."""
    if images.registry in _prepared:
        return _prepared[images.registry]
    names = ImageNames(images.registry, app_path=SHAPES_REPOSITORY)
    push_releases(client, names, SHAPES_RELEASES)
    client.images.get(BASE).tag(LOCAL_ONLY)
    sidecar = f"{images.registry}/{SIDECAR_PATH}:latest"
    first = push_image(client, sidecar, f"FROM {BASE}\n{SLEEPER}\nLABEL generation=1\n")
    repo_digests = client.images.get(images.database).attrs["RepoDigests"]
    digest = next(d for d in repo_digests if d.startswith(f"{images.registry}/"))
    digest = digest.partition("@")[2]
    prepared = ShapeImages(names, f"{images.database}@{digest}", sidecar, first)
    _prepared[images.registry] = prepared
    return prepared


def move_sidecar_tag(client: docker.DockerClient, shapes: ShapeImages, generation: int) -> None:
    """Push a new image under the sidecar's floating tag; the local tag stays where it was, so
    only a pull would move it."""
    push_image(client, shapes.sidecar, f"FROM {BASE}\n{SLEEPER}\nLABEL generation={generation}\n")
    client.images.get(shapes.sidecar_first).tag(shapes.sidecar)


@dataclass
class ShapedDeployment:
    deployment: SandboxDeployment
    images: ShapeImages
    worker_port: int
    instance: str

    def container(self, service: str) -> dict[str, object]:
        """``docker inspect`` of the service's container (empty when it has none)."""
        found = self.deployment.compose("ps", "--all", "-q", service).stdout.split()
        if not found:
            return {}
        inspected = subprocess.run(
            ["docker", "inspect", "--format", "{{json .}}", found[0]],
            capture_output=True,
            text=True,
            check=True,
        )
        result: dict[str, object] = json.loads(inspected.stdout)
        return result

    def start_orphan(self, root: Path) -> str:
        """Start a container of this compose project from another compose file, as an operator
        would; its container id."""
        directory = root / f"{self.deployment.project}-tools"
        directory.mkdir()
        (directory / "compose.yaml").write_text(ORPHAN_COMPOSE)
        arguments = ["docker", "compose", "-p", self.deployment.project]
        command = [*arguments, "--project-directory", str(directory), "up", "-d", "--wait"]
        subprocess.run(command, cwd=directory, capture_output=True, text=True, check=True)
        listed = subprocess.run(
            [*arguments, "--project-directory", str(directory), "ps", "-q", "operator-tool"],
            cwd=directory,
            capture_output=True,
            text=True,
            check=True,
        )
        return listed.stdout.strip()


def create_shaped_deployment(
    root: Path, client: docker.DockerClient, images: ImageNames, version: str = BASELINE
) -> ShapedDeployment:
    shapes = prepare_images(client, images)
    compose_file = SHAPED_COMPOSE.format(
        db_image=shapes.db_by_digest,
        app_path=SHAPES_REPOSITORY,
        local_only=LOCAL_ONLY,
        sidecar_path=SIDECAR_PATH,
    )
    instance = f"shape{secrets.token_hex(4)}"
    worker_port = free_port()
    deployment = create_deployment(
        root,
        shapes.names,
        version,
        compose_file=compose_file,
        env_extra={"SPECIVO_INSTANCE": instance, "SPECIVO_WORKER_PORT": str(worker_port)},
    )
    return ShapedDeployment(deployment, shapes, worker_port, instance)
