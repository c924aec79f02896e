"""A release's image creation time, read from the registry without pulling (the config blob's
``created``, through ``RegistryClient.release_info``).

Rule: best effort. A creation time that cannot be read is ``None`` (the tag's first sighting
is used instead); only the digest is required.
"""

from __future__ import annotations

import logging
from datetime import datetime

from specivod.adapters.registry.client import RegistryClient
from specivod.domain.errors import RegistryError

log = logging.getLogger(__name__)


async def image_created(client: RegistryClient, tag: str) -> datetime | None:
    """The ``created`` time of ``tag``'s image config, or ``None`` when it cannot be read."""
    try:
        return (await client.release_info(tag)).image_created
    except RegistryError as error:
        log.info("cannot read the creation time of %s: %s", tag, error)
        return None
