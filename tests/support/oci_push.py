"""Push a tiny image to a registry through the HTTP API (no docker needed), and tag it many times.

One config blob, one gzip'd tar layer holding a single file, one manifest. Extra tags are PUTs of
the same manifest under other names, over keep-alive connections from a few threads: thousands of
tags take seconds.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import tarfile
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_LAYER_TYPES = {
    OCI_MANIFEST: (
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ),
    DOCKER_MANIFEST: (
        "application/vnd.docker.container.image.v1+json",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ),
}


@dataclass(frozen=True)
class PushedImage:
    repository: str
    manifest: bytes
    media_type: str
    digest: str
    """What the registry answered in ``Docker-Content-Digest`` to the manifest PUT."""


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(content: bytes) -> tuple[bytes, bytes]:
    """(gzip'd tar, plain tar) with one file, byte-for-byte reproducible."""
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime, info.mode = len(content), 0, 0o644
        tar.addfile(info, io.BytesIO(content))
    return gzip.compress(plain.getvalue(), mtime=0), plain.getvalue()


class RegistryConnection:
    """One keep-alive HTTP connection to a registry; raises on any unexpected status."""

    def __init__(self, registry_url: str, headers: Mapping[str, str] | None = None) -> None:
        parts = urlsplit(registry_url)
        self._host = parts.netloc
        self._headers = dict(headers or {})
        self._connection = http.client.HTTPConnection(self._host, timeout=30)

    def request(
        self, method: str, target: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> http.client.HTTPResponse:
        all_headers = {**self._headers, **(headers or {}), "Content-Length": str(len(body))}
        self._connection.request(method, target, body=body, headers=all_headers)
        response = self._connection.getresponse()
        response.read()
        return response

    def expect(self, response: http.client.HTTPResponse, status: int, what: str) -> None:
        if response.status != status:
            raise RuntimeError(f"{what}: {response.status} {response.reason} from {self._host}")

    def upload_blob(self, repository: str, data: bytes) -> str:
        digest = _sha256(data)
        started = self.request("POST", f"/v2/{repository}/blobs/uploads/")
        self.expect(started, 202, f"start upload to {repository}")
        location = urlsplit(started.headers["Location"])
        target = f"{location.path}?{location.query}&digest={digest}".replace("?&", "?")
        finished = self.request("PUT", target, data, {"Content-Type": "application/octet-stream"})
        self.expect(finished, 201, f"upload blob {digest}")
        return digest

    def put_manifest(self, repository: str, tag: str, manifest: bytes, media_type: str) -> str:
        response = self.request(
            "PUT", f"/v2/{repository}/manifests/{tag}", manifest, {"Content-Type": media_type}
        )
        self.expect(response, 201, f"put manifest {repository}:{tag}")
        return response.headers["Docker-Content-Digest"]

    def close(self) -> None:
        self._connection.close()


def push_image(
    registry_url: str,
    repository: str,
    tag: str,
    *,
    headers: Mapping[str, str] | None = None,
    media_type: str = OCI_MANIFEST,
    content: bytes = b"hello from specivod tests\n",
) -> PushedImage:
    config_type, layer_type = _LAYER_TYPES[media_type]
    layer, plain = _layer(content)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [_sha256(plain)]},
        },
        separators=(",", ":"),
    ).encode()
    connection = RegistryConnection(registry_url, headers)
    try:
        config_digest = connection.upload_blob(repository, config)
        layer_digest = connection.upload_blob(repository, layer)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": media_type,
                "config": {"mediaType": config_type, "size": len(config), "digest": config_digest},
                "layers": [{"mediaType": layer_type, "size": len(layer), "digest": layer_digest}],
            },
            indent=3,
        ).encode()
        digest = connection.put_manifest(repository, tag, manifest, media_type)
    finally:
        connection.close()
    return PushedImage(repository, manifest, media_type, digest)


def add_tags(
    registry_url: str,
    image: PushedImage,
    tags: Iterable[str],
    *,
    headers: Mapping[str, str] | None = None,
    workers: int = 8,
) -> None:
    """PUT the image's manifest under every tag in ``tags``."""
    local = threading.local()
    connections: list[RegistryConnection] = []
    lock = threading.Lock()

    def put(tag: str) -> None:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = RegistryConnection(registry_url, headers)
            with lock:
                connections.append(connection)
        digest = connection.put_manifest(image.repository, tag, image.manifest, image.media_type)
        if digest != image.digest:
            raise RuntimeError(f"tag {tag} got digest {digest}, expected {image.digest}")

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(put, tags):
                pass
    finally:
        for connection in connections:
            connection.close()
