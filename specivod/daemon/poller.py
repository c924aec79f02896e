"""The registry poller: lists the tags every ``registry.poll_interval`` (±10 % jitter, so a fleet
does not poll in step), counts polls by result, and keeps the last tags with when each was first
seen. With ``policy.min_age`` set it also records each allowed newer release's digest and image
creation time as a sighting, so that holds survive a restart.

Rule: a failed poll is counted and logged, never fatal; the next poll comes at the usual time.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from specivod.adapters.registry import registry_from_settings
from specivod.adapters.registry.client import RegistryClient
from specivod.daemon.image_age import image_created
from specivod.domain.errors import SpecivodError
from specivod.domain.versions import parse_tags, parse_version
from specivod.engine.sightings import Sightings
from specivod.settings import Settings

log = logging.getLogger(__name__)

JITTER = 0.1


def jittered(interval: timedelta, draw: Callable[[], float] = random.random) -> float:
    """Seconds until the next poll: ``interval`` ± ``JITTER``."""
    return interval.total_seconds() * (1 - JITTER + 2 * JITTER * draw())


@dataclass
class PollState:
    counts: Counter[str] = field(default_factory=lambda: Counter({"ok": 0, "error": 0}))
    tags: list[str] | None = None
    first_seen: dict[str, datetime] = field(default_factory=dict)
    last_poll: datetime | None = None
    last_result: str | None = None
    last_error: str | None = None
    last_success: datetime | None = None
    next_poll: datetime | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "last_poll": self.last_poll.isoformat() if self.last_poll else None,
            "last_poll_result": self.last_result,
            "last_poll_error": self.last_error,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "next_poll": self.next_poll.isoformat() if self.next_poll else None,
            "tags_known": len(self.tags) if self.tags is not None else None,
        }


async def record_sightings(
    client: RegistryClient,
    settings: Settings,
    tags: list[str],
    deployed: str | None,
    now: Callable[[], datetime],
) -> None:
    """Digest and creation time of the releases that could become targets (the allowed ones
    newer than ``deployed``); the creation time is read again only for a new digest."""
    current = parse_version(deployed) if deployed else None
    policy = settings.policy.version_policy()
    sightings = Sightings(settings.state.dir)
    known = sightings.all()
    for version in policy.candidates(parse_tags(tags), current):
        digest = await client.manifest_digest(version.tag)
        seen = known.get(version.tag)
        created = seen.created if seen is not None and seen.digest == digest else None
        if created is None:
            created = await image_created(client, version.tag)
        sightings.observe(version.tag, digest, created, now())


class Poller:
    def __init__(
        self, settings: Settings, now: Callable[[], datetime], deployed: Callable[[], str | None]
    ) -> None:
        self.settings = settings
        self.state = PollState()
        self.polled = asyncio.Event()
        self._now = now
        self._deployed = deployed

    async def poll_once(self, client: RegistryClient) -> None:
        now = self._now()
        self.state.last_poll = now
        try:
            tags = await client.list_tags()
            if self.settings.policy.min_age > timedelta(0):
                await self._sight(client, tags)
        except SpecivodError as error:
            self.state.counts["error"] += 1
            self.state.last_result, self.state.last_error = "error", str(error)
            log.warning("registry poll failed: %s", error)
            return
        for tag in tags:
            self.state.first_seen.setdefault(tag, now)
        self.state.tags = tags
        self.state.counts["ok"] += 1
        self.state.last_result, self.state.last_error = "ok", None
        self.state.last_success = self._now()
        log.info("registry poll: %d tags", len(tags))

    async def _sight(self, client: RegistryClient, tags: list[str]) -> None:
        await record_sightings(client, self.settings, tags, self._deployed(), self._now)

    async def run(self, stop: asyncio.Future[object]) -> None:
        while not stop.done():
            async with registry_from_settings(self.settings.registry) as client:
                await self.poll_once(client)
            self.polled.set()
            delay = jittered(self.settings.registry.poll_interval)
            self.state.next_poll = self._now() + timedelta(seconds=delay)
            await asyncio.wait([stop], timeout=delay)
