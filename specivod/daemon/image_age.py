"""A release's digest and image creation time, read from the registry without pulling: the
manifest (for an index, its first linux/amd64 entry, else its first), then the config blob's
``created``.

Rule: best effort. A creation time that cannot be read is ``None`` (the tag's first sighting
is used instead); only the digest is required.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from specivod.adapters.registry.client import MANIFEST_MEDIA_TYPES, RegistryClient
from specivod.domain.errors import RegistryError

log = logging.getLogger(__name__)


def _pick(index: dict[str, Any]) -> str | None:
    entries = [entry for entry in index.get("manifests", []) if isinstance(entry, dict)]
    for entry in entries:
        platform = entry.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return str(entry.get("digest"))
    return str(entries[0].get("digest")) if entries else None


async def _json(client: RegistryClient, suffix: str, accept: str, what: str) -> dict[str, Any]:
    # The client has no public call for blobs yet; this reads through its authenticated GET.
    reply = await client._get_ok(client._api(suffix), accept=accept, what=what)
    document = json.loads(reply.body)
    if not isinstance(document, dict):
        raise ValueError(f"{what} is not a JSON object")
    return document


async def image_created(client: RegistryClient, tag: str) -> datetime | None:
    """The ``created`` time of ``tag``'s image config, or ``None`` when it cannot be read."""
    accept = ", ".join(MANIFEST_MEDIA_TYPES)
    try:
        manifest = await _json(client, f"manifests/{tag}", accept, f"manifest {tag}")
        if "manifests" in manifest:
            chosen = _pick(manifest)
            if chosen is None:
                return None
            manifest = await _json(client, f"manifests/{chosen}", accept, f"manifest {chosen}")
        config = manifest.get("config") or {}
        digest = config.get("digest")
        if not isinstance(digest, str):
            return None
        blob = await _json(client, f"blobs/{digest}", "*/*", f"config {digest}")
        created = blob.get("created")
        if not isinstance(created, str):
            return None
        moment = datetime.fromisoformat(created.replace("Z", "+00:00"))
        return moment if moment.tzinfo is not None else None
    except (RegistryError, ValueError) as error:
        log.info("cannot read the creation time of %s: %s", tag, error)
        return None
