"""A release's OCI labels and annotations, read from the registry without pulling a layer: the
tag's manifest (for an index: its annotations, then its linux/amd64 entry, else its first), then
the image config blob's ``config.Labels`` and ``created``.

Rule: annotations win over labels, and the index's over the manifest's (the index is what the
publisher tagged). Documents that are not the JSON they should be are a typed
``RegistryProtocolError``; missing pieces (no labels, no config) just leave keys out.
``ReleaseCatalog`` remembers releases by digest and each tag's digest until ``expire()``, so an
unchanged tag costs one HEAD request per poll.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from specivod.domain.errors import RegistryError, RegistryProtocolError
from specivod.domain.releases import ReleaseInfo, ReleaseUnavailable, clean_labels

log = logging.getLogger(__name__)

AMD64 = {"os": "linux", "architecture": "amd64"}


class DocumentSource(Protocol):
    """What ``read_release`` needs of a registry client."""

    @property
    def name(self) -> str: ...

    async def manifest_document(self, reference: str) -> tuple[str, bytes]:
        """(digest, body) of the manifest or index ``reference`` (a tag or a digest) names."""
        ...

    async def blob(self, digest: str) -> bytes: ...


class ReleaseSource(Protocol):
    """What ``ReleaseCatalog`` needs of a registry client."""

    async def manifest_digest(self, tag: str) -> str: ...

    async def release_info(self, tag: str, digest: str | None = None) -> ReleaseInfo: ...


def parse_json_object(body: bytes, what: str, where: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise RegistryProtocolError(f"{where}: {what} is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise RegistryProtocolError(f"{where}: {what} is not a JSON object")
    return document


def pick_platform(index: dict[str, Any]) -> dict[str, Any] | None:
    """The index entry for linux/amd64, else the first entry with a digest."""
    entries = [
        entry
        for entry in index.get("manifests") or []
        if isinstance(entry, dict) and isinstance(entry.get("digest"), str)
    ]
    for entry in entries:
        platform = entry.get("platform")
        if isinstance(platform, dict) and all(platform.get(k) == v for k, v in AMD64.items()):
            return entry
    return entries[0] if entries else None


def config_created(config: dict[str, Any]) -> datetime | None:
    created = config.get("created")
    if not isinstance(created, str):
        return None
    try:
        moment = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


async def read_release(source: DocumentSource, tag: str, digest: str | None = None) -> ReleaseInfo:
    """``tag``'s release info; with ``digest``, the manifest is read by that digest (what the
    caller just saw the tag point at)."""
    where = source.name
    top_digest, body = await source.manifest_document(digest or tag)
    manifest = parse_json_object(body, f"the manifest of {tag}", where)
    overlays = [clean_labels(manifest.get("annotations"))]
    if isinstance(manifest.get("manifests"), list):
        entry = pick_platform(manifest)
        if entry is None:
            return ReleaseInfo(tag, top_digest, overlays[0])
        overlays.insert(0, clean_labels(entry.get("annotations")))
        _, body = await source.manifest_document(str(entry["digest"]))
        manifest = parse_json_object(body, f"the platform manifest of {tag}", where)
        overlays.insert(0, clean_labels(manifest.get("annotations")))
    labels: dict[str, str] = {}
    created = None
    descriptor = manifest.get("config")
    if isinstance(descriptor, dict) and isinstance(descriptor.get("digest"), str):
        blob = await source.blob(descriptor["digest"])
        config = parse_json_object(blob, f"the image config of {tag}", where)
        inner = config.get("config")
        labels = clean_labels(inner.get("Labels") if isinstance(inner, dict) else None)
        created = config_created(config)
    for overlay in overlays:
        labels.update(overlay)
    return ReleaseInfo(tag, top_digest, labels, created)


ReleaseLookup = ReleaseInfo | ReleaseUnavailable


class ReleaseCatalog:
    """Release info by digest, for as long as the catalog lives (the daemon keeps one)."""

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._by_digest: OrderedDict[str, ReleaseInfo] = OrderedDict()
        self._digest_of: dict[str, str] = {}

    async def lookup(self, client: ReleaseSource, tag: str) -> ReleaseLookup:
        """``tag``'s info, or why it could not be read; a registry error never escapes."""
        try:
            digest = self._digest_of.get(tag)
            if digest is None or digest not in self._by_digest:
                digest = await client.manifest_digest(tag)
            cached = self._by_digest.get(digest)
            if cached is None:
                cached = await client.release_info(tag, digest)
                self._by_digest[digest] = cached
                while len(self._by_digest) > self._limit:
                    self._by_digest.popitem(last=False)
            self._by_digest.move_to_end(digest)
            self._digest_of[tag] = digest
            return replace(cached, tag=tag)
        except RegistryError as error:
            log.info("release notes of %s unavailable: %s", tag, error)
            return ReleaseUnavailable(tag, str(error))

    def expire(self) -> None:
        """Tags may have moved (a new poll): the next lookup of each asks for its digest again."""
        self._digest_of.clear()

    def cached(self, tag: str) -> ReleaseInfo | None:
        """What the last successful lookup of ``tag`` found, without asking the registry."""
        digest = self._digest_of.get(tag)
        info = self._by_digest.get(digest) if digest else None
        return replace(info, tag=tag) if info is not None else None
