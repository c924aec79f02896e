"""Build the sandbox images once and push them to the sandbox registry.

``specivo/postgres:15`` is PostgreSQL from the host's own binaries; ``specivo/specivo:<version>``
are the fake releases of ``sandbox.releases``. Every image shares one base layer, so a release
costs a few kilobytes. After pushing, the release tags are removed locally so that each
``docker compose pull`` in a test really pulls from the registry.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from sandbox.releases import RELEASES, Release
from sandbox.rootfs import write_rootfs

FILES = Path(__file__).parent / "files"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
BASE = "specivo-sandbox/base:1"
API_BASE = "specivo-sandbox/api-base:1"
HEALTHCHECK = (
    "HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD "
    'wget -q -O /dev/null "http://127.0.0.1:${SPECIVO_API_PORT}/healthz" || exit 1'
)


@dataclass(frozen=True)
class ImageNames:
    registry: str
    app_path: str = "specivo/specivo"

    @property
    def app(self) -> str:
        return f"{self.registry}/{self.app_path}"

    @property
    def database(self) -> str:
        return f"{self.registry}/specivo/postgres:15"


def _context(dockerfile: str, files: Iterable[tuple[str, Path | bytes]]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        entries = [("Dockerfile", dockerfile.encode()), *files]
        for name, source in entries:
            if isinstance(source, Path):
                archive.add(source, name)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(source)
                info.mode = 0o755
                archive.addfile(info, io.BytesIO(source))
    buffer.seek(0)
    return buffer


def _build(client: docker.DockerClient, tag: str, context: io.BytesIO) -> None:
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True)


def _build_base(client: docker.DockerClient) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        rootfs = write_rootfs(Path(scratch) / "rootfs.tar")
        _build(client, BASE, _context("FROM scratch\nADD rootfs.tar /\n", [("rootfs.tar", rootfs)]))


def _build_database(client: docker.DockerClient, names: ImageNames) -> None:
    dockerfile = (
        f"FROM {BASE}\n"
        "COPY db-entrypoint /usr/local/bin/db-entrypoint\n"
        "ENV POSTGRES_USER=specivo POSTGRES_DB=specivo PGPORT=5432 "
        "PATH=/usr/lib/postgresql/15/bin:/bin\n"
        "USER postgres\n"
        'ENTRYPOINT ["/usr/local/bin/db-entrypoint"]\n'
    )
    _build(
        client, names.database, _context(dockerfile, [("db-entrypoint", FILES / "db-entrypoint")])
    )


def _build_api_base(client: docker.DockerClient) -> None:
    dockerfile = (
        f"FROM {BASE}\n"
        "COPY api-entrypoint /usr/local/bin/api-entrypoint\n"
        "COPY migrations /etc/specivo/migrations\n"
        "COPY cgi-bin /etc/specivo/cgi-bin\n"
        "ENV PATH=/usr/lib/postgresql/15/bin:/bin\n"
        f"{HEALTHCHECK}\n"
        'ENTRYPOINT ["/usr/local/bin/api-entrypoint"]\n'
    )
    files = [
        ("api-entrypoint", FILES / "api-entrypoint"),
        ("migrations", FILES / "migrations"),
        ("cgi-bin", FILES / "cgi-bin"),
    ]
    _build(client, API_BASE, _context(dockerfile, files))


def _build_release(client: docker.DockerClient, names: ImageNames, release: Release) -> str:
    tag = f"{names.app}:{release.version}"
    dockerfile = (
        f"FROM {API_BASE}\n"
        "COPY release /etc/specivo/release\n"
        f'LABEL org.opencontainers.image.version="{release.version}"\n'
    )
    _build(client, tag, _context(dockerfile, [("release", release.release_file().encode())]))
    return tag


def _push(client: docker.DockerClient, reference: str) -> None:
    repository, _, tag = reference.rpartition(":")
    for line in client.images.push(repository, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(f"push of {reference} failed: {line['error']}")


def build_and_push(
    client: docker.DockerClient, registry: str, releases: Iterable[Release] = RELEASES
) -> ImageNames:
    """Build every sandbox image, push it to ``registry`` and drop the local release tags."""
    names = ImageNames(registry)
    _build_base(client)
    _build_database(client, names)
    _build_api_base(client)
    _push(client, names.database)
    for release in releases:
        tag = _build_release(client, names, release)
        _push(client, tag)
        forget(client, tag)
        if release.blob_missing:
            lose_top_layer(registry, "specivo/specivo", release.version)
    return names


def push_releases(
    client: docker.DockerClient, names: ImageNames, releases: Iterable[Release]
) -> None:
    """Build ``releases`` as ``names.app`` on the api base of ``build_and_push``, push them and
    drop the local tags."""
    for release in releases:
        tag = _build_release(client, names, release)
        _push(client, tag)
        forget(client, tag)


def push_image(client: docker.DockerClient, tag: str, dockerfile: str) -> str:
    """Build a Dockerfile with no other files (``FROM`` one of the sandbox images) and push it;
    the image id."""
    _build(client, tag, _context(dockerfile, []))
    _push(client, tag)
    return str(client.images.get(tag).id)


def lose_top_layer(registry: str, repository: str, tag: str) -> None:
    """Delete the tag's last layer blob from the registry, as a failed storage would."""
    manifest_url = f"http://{registry}/v2/{repository}/manifests/{tag}"
    request = urllib.request.Request(manifest_url, headers={"Accept": DOCKER_MANIFEST})
    with urllib.request.urlopen(request, timeout=10) as response:
        layer = json.load(response)["layers"][-1]["digest"]
    delete = urllib.request.Request(
        f"http://{registry}/v2/{repository}/blobs/{layer}", method="DELETE"
    )
    with urllib.request.urlopen(delete, timeout=10) as response:
        if response.status != 202:
            raise RuntimeError(f"registry refused to delete {layer}: {response.status}")


def forget(client: docker.DockerClient, reference: str) -> None:
    """Remove a local tag so the next pull fetches it from the registry."""
    with contextlib.suppress(ImageNotFound):
        client.images.remove(reference)
