"""Release info from registry documents (a fake registry of JSON bodies): labels from the config
blob, annotations winning, an index followed to linux/amd64, bad JSON, missing labels, publisher
text bounded and cleaned; and the catalog that remembers releases by digest."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from specivod.adapters.registry.release import ReleaseCatalog, read_release
from specivod.domain.errors import RegistryProtocolError, RegistryUnavailable
from specivod.domain.releases import (
    ELLIPSIS,
    MAX_DESCRIPTION_LENGTH,
    MAX_KEYS,
    OCI,
    ReleaseInfo,
    ReleaseUnavailable,
)


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class Documents:
    """A registry of manifests (by tag and digest) and blobs (by digest); counts reads."""

    name = "registry fake, repository specivo/specivo"

    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.reads: list[str] = []

    def put_blob(self, document: Any) -> str:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.blobs[digest_of(body)] = body
        return digest_of(body)

    def put_manifest(self, document: Any, tag: str | None = None) -> str:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.manifests[digest_of(body)] = body
        if tag is not None:
            self.manifests[tag] = body
        return digest_of(body)

    def image(self, labels: Any, annotations: Any = None, created: str | None = None) -> str:
        config: dict[str, Any] = {"config": {"Labels": labels}}
        if created is not None:
            config["created"] = created
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "config": {"digest": self.put_blob(config)},
            "layers": [{"digest": "sha256:" + "0" * 64}],
        }
        if annotations is not None:
            manifest["annotations"] = annotations
        return self.put_manifest(manifest)

    async def manifest_document(self, reference: str) -> tuple[str, bytes]:
        self.reads.append(reference)
        body = self.manifests[reference]
        return digest_of(body), body

    async def blob(self, digest: str) -> bytes:
        self.reads.append(digest)
        return self.blobs[digest]


def title(text: str) -> dict[str, str]:
    return {OCI + "title": text}


async def test_labels_come_from_the_config_blob_and_annotations_win() -> None:
    docs = Documents()
    labels = {**title("from label"), OCI + "revision": "abc123", "com.example.other": "x"}
    top = docs.image(labels, annotations=title("from annotation"), created="2026-01-02T03:04:05Z")
    docs.manifests["0.1.11"] = docs.manifests[top]

    info = await read_release(docs, "0.1.11")

    assert info.digest == top
    assert info.get("title") == "from annotation"
    assert info.get("revision") == "abc123"
    assert info.labels["com.example.other"] == "x"
    assert info.image_created == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert info.shown() == {OCI + "title": "from annotation", OCI + "revision": "abc123"}


async def test_an_index_is_followed_to_linux_amd64_not_its_first_entry() -> None:
    docs = Documents()
    arm = docs.image(title("arm build"))
    amd = docs.image(
        {**title("amd build"), OCI + "description": "from amd64 config"},
        annotations={**title("amd annotation"), OCI + "url": "https://amd.example"},
    )
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"digest": arm, "platform": {"os": "linux", "architecture": "arm64"}},
            {
                "digest": amd,
                "platform": {"os": "linux", "architecture": "amd64"},
                "annotations": {OCI + "url": "https://entry.example"},
            },
        ],
        "annotations": title("from the index"),
    }
    top = docs.put_manifest(index, tag="0.2.0")

    info = await read_release(docs, "0.2.0")

    assert info.digest == top
    assert info.get("title") == "from the index"
    assert info.get("description") == "from amd64 config"
    assert info.get("url") == "https://entry.example"
    assert arm not in docs.reads and amd in docs.reads


async def test_an_index_without_amd64_uses_its_first_entry() -> None:
    docs = Documents()
    arm = docs.image(title("arm build"))
    other = docs.image(title("s390x build"))
    entries = [
        {"digest": arm, "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": other, "platform": {"os": "linux", "architecture": "s390x"}},
    ]
    docs.put_manifest({"schemaVersion": 2, "manifests": entries}, tag="0.2.0")

    assert (await read_release(docs, "0.2.0")).get("title") == "arm build"


async def test_reading_by_digest_reads_what_the_tag_was_seen_to_point_at() -> None:
    docs = Documents()
    old = docs.image(title("old"))
    docs.manifests["0.1.11"] = docs.manifests[docs.image(title("moved"))]

    info = await read_release(docs, "0.1.11", old)

    assert info.tag == "0.1.11" and info.get("title") == "old"


@pytest.mark.parametrize(
    "labels", [None, [], "a string", {"key": 5}, {OCI + "title": None}], ids=repr
)
async def test_missing_or_malformed_labels_give_no_keys(labels: Any) -> None:
    docs = Documents()
    docs.manifests["1.0.0"] = docs.manifests[docs.image(labels)]

    info = await read_release(docs, "1.0.0")

    assert info.labels == {}
    assert info.image_created is None


async def test_a_manifest_without_a_config_has_only_its_annotations() -> None:
    docs = Documents()
    docs.put_manifest({"schemaVersion": 2, "annotations": title("bare")}, tag="1.0.0")

    assert (await read_release(docs, "1.0.0")).labels == title("bare")


@pytest.mark.parametrize(
    ("where", "body", "message"),
    [
        ("manifest", b"{not json", "the manifest of 1.0.0 is not valid JSON"),
        ("manifest", b"[1, 2]", "the manifest of 1.0.0 is not a JSON object"),
        ("manifest", b"\xff\xfe", "the manifest of 1.0.0 is not valid JSON"),
        ("config", b"<html>proxy error</html>", "the image config of 1.0.0 is not valid JSON"),
        ("config", b'"just a string"', "the image config of 1.0.0 is not a JSON object"),
    ],
)
async def test_bad_json_is_a_protocol_error_naming_the_document(
    where: str, body: bytes, message: str
) -> None:
    docs = Documents()
    if where == "manifest":
        docs.manifests["1.0.0"] = body
    else:
        blob = docs.put_blob(body)
        docs.put_manifest({"schemaVersion": 2, "config": {"digest": blob}}, tag="1.0.0")

    with pytest.raises(RegistryProtocolError, match=message) as raised:
        await read_release(docs, "1.0.0")
    assert str(raised.value).startswith(Documents.name)


async def test_a_huge_description_is_cut_with_an_ellipsis_and_control_characters_go() -> None:
    docs = Documents()
    description = "\x1b[2J\x1b]0;owned\x07Breaking: run the reindex.\n" + "x" * 1_000_000
    labels = {OCI + "description": description, OCI + "title": "t\x00i\x9btle\r"}
    docs.manifests["1.0.0"] = docs.manifests[docs.image(labels)]

    info = await read_release(docs, "1.0.0")

    text = info.get("description") or ""
    assert len(text) == MAX_DESCRIPTION_LENGTH
    assert text.endswith(ELLIPSIS)
    assert text.startswith("[2J]0;ownedBreaking: run the reindex.\n")
    assert info.get("title") == "title"
    assert all(ord(c) >= 32 or c == "\n" for c in text)


async def test_the_number_of_labels_is_bounded() -> None:
    docs = Documents()
    labels = {f"label.{number}": "v" for number in range(10_000)}
    docs.manifests["1.0.0"] = docs.manifests[docs.image(labels)]

    assert len((await read_release(docs, "1.0.0")).labels) == MAX_KEYS


class Releases:
    """What the catalog asks of a client, counting HEADs and full reads."""

    def __init__(self) -> None:
        self.digests = {"0.1.11": "sha256:" + "a" * 64}
        self.heads = 0
        self.reads = 0
        self.failing = False

    async def manifest_digest(self, tag: str) -> str:
        self.heads += 1
        if self.failing:
            raise RegistryUnavailable("registry fake: GET answered 503 (4 attempts)")
        return self.digests[tag]

    async def release_info(self, tag: str, digest: str | None = None) -> ReleaseInfo:
        self.reads += 1
        return ReleaseInfo(tag, digest or self.digests[tag], title(f"read #{self.reads}"))


async def test_the_catalog_reads_a_digest_once_and_asks_for_digests_again_after_expire() -> None:
    catalog, client = ReleaseCatalog(), Releases()

    first = await catalog.lookup(client, "0.1.11")
    again = await catalog.lookup(client, "0.1.11")
    assert (client.heads, client.reads) == (1, 1)

    catalog.expire()
    unchanged = await catalog.lookup(client, "0.1.11")
    assert (client.heads, client.reads) == (2, 1)

    catalog.expire()
    client.digests["0.1.11"] = "sha256:" + "b" * 64
    moved = await catalog.lookup(client, "0.1.11")
    assert (client.heads, client.reads) == (3, 2)

    assert first == again == unchanged
    assert isinstance(moved, ReleaseInfo) and moved.get("title") == "read #2"
    assert catalog.cached("0.1.11") == moved


async def test_a_registry_error_is_an_unavailable_release_not_an_exception() -> None:
    catalog, client = ReleaseCatalog(), Releases()
    client.failing = True

    found = await catalog.lookup(client, "0.1.11")

    assert found == ReleaseUnavailable("0.1.11", "registry fake: GET answered 503 (4 attempts)")
    assert catalog.cached("0.1.11") is None
