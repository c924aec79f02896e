"""The fake Specivo releases in the sandbox registry, and how each behaves."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Behaviour(StrEnum):
    HEALTHY = "healthy"
    NEVER_HEALTHY = "never-healthy"
    MIGRATE_THEN_FAIL = "migrate-then-fail"
    SLOW = "slow"
    MIGRATE_LATE = "migrate-late"
    """Never healthy; its migration commits only as the container is stopped (a slow migration
    that outlived the health budget)."""
    WORKER_NEVER_HEALTHY = "worker-never-healthy"
    """The api gets healthy; the same image run as a worker (``SPECIVO_ROLE=worker``) never."""
    SEARCH_BROKEN = "search-broken"
    """Healthy, signs in and opens issues, but every search finds nothing."""


SMOKE_USER = "specivod-smoke"
SMOKE_PASSWORD = "sandbox-smoke-pw-6b1f0e93"  # noqa: S105 (the sandbox's own, in every image)
"""The user every release's API signs in (``cgi-bin/api``); the smoke scenario's secret."""


@dataclass(frozen=True)
class Release:
    version: str
    behaviour: Behaviour
    schema: int
    start_delay: int = 0
    blob_missing: bool = False
    """Listed in the registry, but its top layer was lost: every pull fails."""

    def release_file(self) -> str:
        return (
            f"VERSION={self.version}\nBEHAVIOUR={self.behaviour}\n"
            f"SCHEMA={self.schema}\nSTART_DELAY={self.start_delay}\n"
            f"SMOKE_USER={SMOKE_USER}\nSMOKE_PASSWORD={SMOKE_PASSWORD}\n"
        )


RELEASES = (
    Release("0.1.9", Behaviour.HEALTHY, 1),
    Release("0.1.10", Behaviour.HEALTHY, 1),
    Release("0.1.11", Behaviour.HEALTHY, 1),
    Release("0.2.0", Behaviour.HEALTHY, 2),
    Release("0.2.1", Behaviour.NEVER_HEALTHY, 1),
    Release("0.2.2", Behaviour.SLOW, 1, start_delay=6),
    Release("0.2.3", Behaviour.MIGRATE_THEN_FAIL, 3),
    Release("0.2.4", Behaviour.HEALTHY, 1, blob_missing=True),
    Release("0.3.0-rc.1", Behaviour.HEALTHY, 2),
    Release("0.2.3-late.1", Behaviour.MIGRATE_LATE, 2),
    Release("0.2.8-search.1", Behaviour.SEARCH_BROKEN, 2),
)
BY_VERSION = {release.version: release for release in RELEASES}
BASELINE = "0.1.10"
HEALTHY_UPGRADE = "0.2.0"
NEVER_HEALTHY = "0.2.1"
SLOW = "0.2.2"
MIGRATES_THEN_FAILS = "0.2.3"
UNPULLABLE = "0.2.4"
SEARCH_BROKEN = "0.2.8-search.1"
"""Healthy but its search finds nothing. A pre-release below 0.3.0-rc.1 (the registry's latest)
that no other test's pre-release range holds (they stop below 0.2.0)."""
MISSING = "0.2.9"
"""A tag that exists nowhere."""

SHAPES_REPOSITORY = "specivo-shapes/specivo"
"""The compose-shapes tests push their releases here, apart from ``RELEASES``' repository, so the
tags other tests list stay as they are."""
SHAPES_RELEASES = (
    Release("0.1.10", Behaviour.HEALTHY, 1),
    Release("0.1.11", Behaviour.HEALTHY, 1),
    Release("0.2.6", Behaviour.WORKER_NEVER_HEALTHY, 1),
)
WORKER_NEVER_HEALTHY = "0.2.6"
