"""Image references normalised the way Docker normalises them.

``specivo/specivo`` → ``docker.io/specivo/specivo`` (API host ``registry-1.docker.io``), a one-word
name gets ``library/``, and an explicit host (one with a dot or a port, or ``localhost``) is kept.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_LEGACY_HUB_NAMES = {"index.docker.io", "registry-1.docker.io", "docker.io"}
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.?)+(?::\d+)?|\[[0-9a-fA-F:.]+\](?::\d+)?"
)


@dataclass(frozen=True)
class ImageReference:
    """A repository in a registry: ``domain`` as written by users, ``path`` inside it."""

    domain: str
    path: str

    @property
    def api_host(self) -> str:
        """Where the distribution API answers (Docker Hub's API lives on another host)."""
        return DOCKER_HUB_API if self.domain == DOCKER_HUB else self.domain

    @property
    def is_loopback(self) -> bool:
        host = (
            self.domain.rsplit(":", 1)[0]
            if not self.domain.startswith("[")
            else (self.domain[1:].split("]", 1)[0])
        )
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"{self.domain}/{self.path}"

    def with_tag(self, tag: str) -> str:
        return f"{self}:{tag}"


def _looks_like_host(component: str) -> bool:
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or (component.startswith("["))
    )


def parse_reference(text: str) -> ImageReference:
    """Parse an image reference *without* a tag or digest; raise ``ValueError`` naming the fault."""
    reference = text.strip()
    if not reference:
        raise ValueError("image reference is empty")
    if "@" in reference:
        raise ValueError(f"{text!r} carries a digest; give the repository only")
    first, _, rest = reference.partition("/")
    if rest and _looks_like_host(first):
        if not _HOST.fullmatch(first):
            raise ValueError(f"{text!r}: {first!r} is not a valid registry host")
        domain, path = first, rest
    else:
        domain, path = DOCKER_HUB, reference
    if domain in _LEGACY_HUB_NAMES:
        domain = DOCKER_HUB
    if ":" in path:
        raise ValueError(f"{text!r} carries a tag; give the repository only (the tag is chosen)")
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            raise ValueError(
                f"{text!r}: path component {component!r} must be lowercase letters, digits and "
                "separators (. _ __ -)"
            )
    return ImageReference(domain=domain, path=path)
