"""The narrow interfaces the engine depends on. Real adapters and hand-written test fakes both
implement them."""

from __future__ import annotations

from typing import Protocol


class Registry(Protocol):
    """Read-only view of one repository in a container registry."""

    async def list_tags(self) -> list[str]:
        """Every tag of the repository, following pagination to the end."""
        ...

    async def manifest_digest(self, tag: str) -> str:
        """The digest ``docker pull`` reports for ``tag`` (``sha256:...``)."""
        ...
