"""The registry client against the real CNCF distribution registry: anonymous, htpasswd Basic
auth, token auth with real signed JWTs, 1,500 tags across pages, refusals, digests equal to
what the registry reported when the manifest was pushed, and release info (config labels,
manifest and index annotations, an index followed to linux/amd64) read without a layer."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from specivod.adapters.registry import Credentials, DockerConfigCredentials, RegistryClient
from specivod.adapters.registry.release import ReleaseCatalog
from specivod.domain.errors import RegistryAuthError, RegistryNotFound
from specivod.domain.references import ImageReference
from specivod.retrying import RetryPolicy, no_sleep
from tests.support.oci_push import (
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    PushedImage,
    RegistryConnection,
    add_tags,
    push_image,
)
from tests.support.paging_proxy import PagingProxy
from tests.support.registry import RegistryProcess, start_registry
from tests.support.token_server import TokenServer

REPO = "specivo/specivo"
MANY = "specivo/many"
TAGS = ["0.1.10", "0.1.11", "0.2.0", "latest"]
MANY_TAGS = [f"1.{minor}.{patch}" for minor in range(30) for patch in range(50)]
USER, PASSWORD = "alice", "wonderland-7"


@dataclass
class Deployment:
    registry: RegistryProcess
    image: PushedImage
    docker_image: PushedImage


def populate(url: str, headers: dict[str, str] | None = None) -> tuple[PushedImage, PushedImage]:
    image = push_image(url, REPO, TAGS[0], headers=headers)
    add_tags(url, image, TAGS[1:], headers=headers)
    docker_image = push_image(
        url, "specivo/docker", "1.0.0", headers=headers, media_type=DOCKER_MANIFEST
    )
    return image, docker_image


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def client(
    address: str,
    repository: str = REPO,
    credentials: Credentials | DockerConfigCredentials | None = None,
    page_size: int = 100,
) -> RegistryClient:
    return RegistryClient(
        ImageReference(address, repository),
        credentials=credentials,
        retry=RetryPolicy(attempts=2, sleep=no_sleep),
        timeout=10.0,
        page_size=page_size,
    )


def alice(password: str = PASSWORD) -> Credentials:
    return Credentials(username=USER, password=SecretStr(password))


@pytest.fixture(scope="module")
def anonymous(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    registry = start_registry(tmp_path_factory.mktemp("anonymous"))
    try:
        image, docker_image = populate(registry.url)
        many = push_image(registry.url, MANY, MANY_TAGS[0])
        add_tags(registry.url, many, MANY_TAGS[1:])
        yield Deployment(registry, image, docker_image)
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def htpasswd_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("htpasswd")
    entry = subprocess.run(
        ["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True
    ).stdout
    password_file = workdir / "htpasswd"
    password_file.write_text(entry, encoding="utf-8")
    registry = start_registry(workdir / "registry", htpasswd=password_file)
    try:
        image, docker_image = populate(registry.url, {"Authorization": basic(USER, PASSWORD)})
        yield Deployment(registry, image, docker_image)
    finally:
        registry.stop()


@dataclass
class TokenDeployment(Deployment):
    tokens: TokenServer


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenDeployment]:
    workdir = tmp_path_factory.mktemp("token")
    tokens = TokenServer(workdir / "tokens", users={USER: PASSWORD}, anonymous_pull=False).start()
    registry = start_registry(workdir / "registry", token=tokens.auth_config())
    try:
        repositories = [REPO, "specivo/docker", MANY]
        push_token = tokens.issue(
            "pusher",
            [
                {"type": "repository", "name": name, "actions": ["pull", "push"]}
                for name in repositories
            ],
        )
        headers = {"Authorization": f"Bearer {push_token}"}
        image, docker_image = populate(registry.url, headers)
        many = push_image(registry.url, MANY, MANY_TAGS[0], headers=headers)
        add_tags(registry.url, many, MANY_TAGS[1:300], headers=headers)
        yield TokenDeployment(registry, image, docker_image, tokens)
    finally:
        registry.stop()
        tokens.stop()


async def assert_reads_everything(
    deployment: Deployment, credentials: Credentials | DockerConfigCredentials | None = None
) -> None:
    address = deployment.registry.address
    async with client(address, credentials=credentials) as registry:
        assert sorted(await registry.list_tags()) == sorted(TAGS)
        for tag in TAGS:
            assert await registry.manifest_digest(tag) == deployment.image.digest
    async with client(address, "specivo/docker", credentials) as registry:
        assert await registry.manifest_digest("1.0.0") == deployment.docker_image.digest


async def test_anonymous(anonymous: Deployment) -> None:
    await assert_reads_everything(anonymous)


async def test_anonymous_unknown_repository_and_tag(anonymous: Deployment) -> None:
    async with client(anonymous.registry.address, "specivo/absent") as registry:
        with pytest.raises(RegistryNotFound, match="specivo/absent"):
            await registry.list_tags()
    async with client(anonymous.registry.address) as registry:
        with pytest.raises(RegistryNotFound, match=r"9\.9\.9"):
            await registry.manifest_digest("9.9.9")


async def test_unpaginated_listing_is_one_request(anonymous: Deployment) -> None:
    async with client(anonymous.registry.address, MANY) as registry:
        assert sorted(await registry.list_tags()) == sorted(MANY_TAGS)
        assert registry.requests == 1


@pytest.mark.parametrize(("absolute", "page_size", "pages"), [(False, 100, 15), (True, 64, 24)])
async def test_1500_tags_across_pages(
    anonymous: Deployment, absolute: bool, page_size: int, pages: int
) -> None:
    proxy = PagingProxy(anonymous.registry.address, absolute_links=absolute).start()
    try:
        async with client(proxy.address, MANY, page_size=page_size) as registry:
            tags = await registry.list_tags()
            assert registry.requests == pages
        assert len(tags) == 1500
        assert tags == sorted(MANY_TAGS)
        listed = [r for r in proxy.requests if "/tags/list" in r]
        assert listed[0] == f"GET /v2/{MANY}/tags/list?n={page_size}"
        assert len(listed) == pages
    finally:
        proxy.stop()


async def test_htpasswd_basic_auth(htpasswd_registry: Deployment) -> None:
    await assert_reads_everything(htpasswd_registry, credentials=alice())


async def test_htpasswd_with_docker_config_json(
    htpasswd_registry: Deployment, tmp_path: Path
) -> None:
    address = htpasswd_registry.registry.address
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {address: {"auth": auth}}}), encoding="utf-8")
    await assert_reads_everything(
        htpasswd_registry, credentials=DockerConfigCredentials(address, config)
    )


async def test_htpasswd_wrong_password(htpasswd_registry: Deployment) -> None:
    address = htpasswd_registry.registry.address
    async with client(address, credentials=alice("not-the-password")) as registry:
        with pytest.raises(RegistryAuthError) as caught:
            await registry.list_tags()
    message = str(caught.value)
    assert message.startswith(f"registry {address}, repository {REPO}: ")
    assert f"refused the credentials of user '{USER}'" in message
    assert "not-the-password" not in message


async def test_htpasswd_without_credentials(htpasswd_registry: Deployment) -> None:
    async with client(htpasswd_registry.registry.address) as registry:
        with pytest.raises(RegistryAuthError, match="requires a login"):
            await registry.list_tags()


async def test_token_auth_with_real_signed_tokens(token_registry: TokenDeployment) -> None:
    before = token_registry.tokens.token_requests()
    await assert_reads_everything(token_registry, credentials=alice())
    # one token per client (two clients), reused for every request of that client
    assert token_registry.tokens.token_requests() - before == 2


async def test_token_auth_through_the_paging_proxy(token_registry: TokenDeployment) -> None:
    proxy = PagingProxy(token_registry.registry.address).start()
    try:
        async with client(proxy.address, MANY, credentials=alice(), page_size=100) as registry:
            tags = await registry.list_tags()
            # 401 challenge, token, then three pages
            assert registry.requests == 5
        assert tags == sorted(MANY_TAGS[:300])
    finally:
        proxy.stop()


async def test_token_auth_wrong_password(token_registry: TokenDeployment) -> None:
    address = token_registry.registry.address
    async with client(address, credentials=alice("guess")) as registry:
        with pytest.raises(RegistryAuthError) as caught:
            await registry.list_tags()
    message = str(caught.value)
    assert f"token service {token_registry.tokens.realm} refused" in message
    assert f"user '{USER}'" in message
    assert "guess" not in message


async def test_token_auth_anonymous_refused(token_registry: TokenDeployment) -> None:
    async with client(token_registry.registry.address) as registry:
        with pytest.raises(RegistryAuthError, match="refused anonymous access"):
            await registry.list_tags()


# Release info: labels in the image config, annotations on the manifest and on an index.

NOTES_REPO = "specivo/notes"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI = "org.opencontainers.image."
TITLE, DESCRIPTION, SOURCE, REVISION = (
    OCI + k for k in ("title", "description", "source", "revision")
)


def _oci_image(
    connection: RegistryConnection,
    tag: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    architecture: str = "amd64",
) -> dict[str, object]:
    """Push an OCI image whose config carries ``labels`` and whose manifest ``annotations``
    as ``tag``; its index descriptor."""
    config = json.dumps(
        {
            "architecture": architecture,
            "os": "linux",
            "created": "2026-03-04T05:06:07Z",
            "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": len(config),
                "digest": connection.upload_blob(NOTES_REPO, config),
            },
            "layers": [],
            "annotations": annotations,
        }
    ).encode()
    return {
        "mediaType": OCI_MANIFEST,
        "size": len(manifest),
        "digest": connection.put_manifest(NOTES_REPO, tag, manifest, OCI_MANIFEST),
        "platform": {"os": "linux", "architecture": architecture},
    }


def push_release_images(url: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    """``1.0.0``: one OCI image (labels, and an annotation that wins); ``2.0.0``: an index of an
    arm64 (first) and an amd64 image, with annotations of its own. Tag → digest."""
    connection = RegistryConnection(url, headers)
    try:
        single = _oci_image(
            connection,
            "1.0.0",
            {TITLE: "label title", DESCRIPTION: "From the config.", REVISION: "abc123"},
            {TITLE: "annotated title"},
        )
        arm = _oci_image(connection, "2.0.0-arm64", {TITLE: "arm64 build"}, {}, "arm64")
        amd = _oci_image(
            connection, "2.0.0-amd64", {TITLE: "amd64 build", DESCRIPTION: "BREAKING: reindex"}, {}
        )
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [arm, amd],
                "annotations": {SOURCE: "https://example.org/specivo", TITLE: "Specivo 2.0"},
            }
        ).encode()
        index_digest = connection.put_manifest(NOTES_REPO, "2.0.0", index, OCI_INDEX)
    finally:
        connection.close()
    return {"1.0.0": str(single["digest"]), "2.0.0": index_digest}


async def assert_release_info(address: str, digests: dict[str, str], **kwargs: Any) -> None:
    async with client(address, NOTES_REPO, **kwargs) as registry:
        single = await registry.release_info("1.0.0")
        index = await registry.release_info("2.0.0")
        assert await registry.manifest_digest("2.0.0") == index.digest
    assert single.digest == digests["1.0.0"]
    assert single.shown() == {
        TITLE: "annotated title",
        DESCRIPTION: "From the config.",
        REVISION: "abc123",
    }
    assert single.image_created == datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert index.digest == digests["2.0.0"]
    assert index.shown() == {
        TITLE: "Specivo 2.0",
        DESCRIPTION: "BREAKING: reindex",
        SOURCE: "https://example.org/specivo",
    }


async def test_release_info_from_labels_annotations_and_an_index(anonymous: Deployment) -> None:
    url = anonymous.registry.url
    await assert_release_info(anonymous.registry.address, push_release_images(url))


async def test_release_info_with_token_auth(token_registry: TokenDeployment) -> None:
    scope = {"type": "repository", "name": NOTES_REPO, "actions": ["pull", "push"]}
    pusher = token_registry.tokens.issue("pusher", [scope])
    digests = push_release_images(
        token_registry.registry.url, {"Authorization": f"Bearer {pusher}"}
    )
    await assert_release_info(token_registry.registry.address, digests, credentials=alice())


async def test_the_catalog_reads_an_unchanged_release_with_one_head(
    anonymous: Deployment,
) -> None:
    push_release_images(anonymous.registry.url)
    catalog = ReleaseCatalog()
    async with client(anonymous.registry.address, NOTES_REPO) as registry:
        first = await catalog.lookup(registry, "2.0.0")
        cost = registry.requests
        catalog.expire()
        again = await catalog.lookup(registry, "2.0.0")
        assert registry.requests - cost == 1
    assert first == again
    assert cost == 4  # HEAD, the index, the amd64 manifest, its config blob
