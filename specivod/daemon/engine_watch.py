"""Whether the Docker Engine answers, as the daemon last saw it: the status API, the
``specivod_engine_up`` metric and the gate read it; the daemon itself never depends on it.

Rule: one ping every ``ENGINE_CHECK_EVERY`` seconds (or the poll interval when shorter), in a
thread so a hung engine never blocks the loop; a change is logged once, when it happens. Until
the first ping nothing is claimed (``reachable`` is ``None``, the metric absent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

ENGINE_CHECK_EVERY = 10.0
Probe = Callable[[], str | None]
"""``None`` when the engine answers, else why not, a sentence naming the engine (blocking)."""


@dataclass
class EngineHealth:
    reachable: bool | None = None
    problem: str | None = None
    since: datetime | None = None
    """When it last changed between reachable and unreachable."""
    checked: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "problem": self.problem,
            "since": self.since.astimezone(UTC).isoformat() if self.since else None,
            "checked": self.checked.astimezone(UTC).isoformat() if self.checked else None,
        }

    @property
    def blocks(self) -> str | None:
        """Why no upgrade may start, while the engine does not answer."""
        if self.reachable is not False:
            return None
        return self.problem or "the Docker Engine does not answer"


class EngineWatch:
    def __init__(self, probe: Probe, now: Callable[[], datetime], every: float) -> None:
        self._probe = probe
        self._now = now
        self.every = min(every, ENGINE_CHECK_EVERY)
        self.health = EngineHealth()

    async def check(self) -> EngineHealth:
        problem = await asyncio.to_thread(self._probe)
        now = self._now()
        reachable = problem is None
        health = self.health
        if health.reachable is not reachable:
            if not reachable:
                log.error("%s", problem)
            elif health.reachable is False:
                log.warning("the Docker Engine answers again")
            health.since = now
        health.reachable, health.problem, health.checked = reachable, problem, now
        return health

    async def run(self, stop: asyncio.Future[Any]) -> None:
        while not stop.done():
            await self.check()
            await asyncio.wait([stop], timeout=self.every)
