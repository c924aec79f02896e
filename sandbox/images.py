"""Build the sandbox images once and push them to the sandbox registry.

``specivo/postgres:15`` is PostgreSQL from the host's own binaries; ``specivo/specivo:<version>``
are the fake releases of ``sandbox.releases``, each with OCI labels saying what it is
(``release_labels``). Every image shares one base layer, so a release costs a few kilobytes.
``publish_index`` tags a multi-platform OCI index (with annotations) over pushed releases.
After pushing, the release tags are removed locally so that each ``docker compose pull`` in a
test really pulls from the registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from sandbox.releases import RELEASES, Release
from sandbox.rootfs import write_rootfs

FILES = Path(__file__).parent / "files"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI = "org.opencontainers.image."
CREATED = "2026-01-15T09:30:00Z"
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


def release_labels(release: Release) -> dict[str, str]:
    """The OCI labels every sandbox release carries: what it says about itself."""
    return {
        OCI + "version": release.version,
        OCI + "title": f"Specivo {release.version}",
        OCI + "description": f"Sandbox release {release.version}: {release.behaviour}.",
        OCI + "url": "https://specivo.example/",
        OCI + "source": "https://git.specivo.example/specivo/specivo",
        OCI + "revision": hashlib.sha256(release.version.encode()).hexdigest()[:40],
        OCI + "created": CREATED,
    }


def _label_lines(labels: Mapping[str, str]) -> str:
    return "".join(
        f"LABEL {json.dumps(key)}={json.dumps(value)}\n" for key, value in labels.items()
    )


def _build_release(
    client: docker.DockerClient,
    names: ImageNames,
    release: Release,
    labels: Mapping[str, str] | None = None,
) -> str:
    tag = f"{names.app}:{release.version}"
    # The labels come first: the classic builder keeps an image per step, and a step after the
    # COPY would keep the release's own layer on the host after ``forget`` (a release whose
    # layer the registry lost must not pull from a local copy).
    labelled = _label_lines({**release_labels(release), **(labels or {})})
    dockerfile = f"FROM {API_BASE}\n{labelled}COPY release /etc/specivo/release\n"
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
    client: docker.DockerClient,
    names: ImageNames,
    releases: Iterable[Release],
    labels: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Build ``releases`` as ``names.app`` on the api base of ``build_and_push``, push them and
    drop the local tags. ``labels`` adds labels per version (over ``release_labels``)."""
    for release in releases:
        tag = _build_release(client, names, release, (labels or {}).get(release.version))
        _push(client, tag)
        forget(client, tag)


def push_image(client: docker.DockerClient, tag: str, dockerfile: str) -> str:
    """Build a Dockerfile with no other files (``FROM`` one of the sandbox images) and push it;
    the image id."""
    _build(client, tag, _context(dockerfile, []))
    _push(client, tag)
    return str(client.images.get(tag).id)


def publish_index(
    registry: str,
    repository: str,
    tag: str,
    platforms: Mapping[str, str],
    annotations: Mapping[str, str],
) -> str:
    """Tag ``tag`` as a multi-platform OCI index with ``annotations`` over already pushed
    images (``platforms``: architecture → the tag of a linux image, in index order); its
    digest. No image is pulled or rebuilt: the index only points at their manifests."""
    entries = []
    for architecture, source in platforms.items():
        request = urllib.request.Request(
            f"http://{registry}/v2/{repository}/manifests/{source}",
            headers={"Accept": DOCKER_MANIFEST},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            entries.append(
                {
                    "mediaType": response.headers["Content-Type"],
                    "size": len(body),
                    "digest": response.headers["Docker-Content-Digest"],
                    "platform": {"os": "linux", "architecture": architecture},
                }
            )
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
            "annotations": dict(annotations),
        }
    ).encode()
    put = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        data=index,
        method="PUT",
        headers={"Content-Type": OCI_INDEX},
    )
    with urllib.request.urlopen(put, timeout=10) as response:
        if response.status != 201:
            raise RuntimeError(f"registry refused the index {tag}: {response.status}")
        return str(response.headers["Docker-Content-Digest"])


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
