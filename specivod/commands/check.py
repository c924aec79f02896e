"""``specivod check``: the deployed version, what the policy allows, the next target, what that
release says about itself (and its notes link), what is held and why, and the maintenance window.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from specivod.adapters import compose
from specivod.adapters.clock import Clock
from specivod.adapters.registry.client import RegistryClient
from specivod.adapters.registry.release import ReleaseCatalog, ReleaseLookup
from specivod.commands.backup_estimate import next_backup
from specivod.commands.output import emit_json, error, say
from specivod.daemon.planner import (
    Lookup,
    Review,
    describe_release,
    held_releases,
    plan_with_review,
    review_releases,
    shown_version,
)
from specivod.daemon.poller import record_sightings
from specivod.domain.errors import JournalError
from specivod.domain.planning import Plan
from specivod.domain.releases import ReleaseUnavailable
from specivod.domain.windows import is_open, next_opening
from specivod.engine.controls import Controls
from specivod.engine.journal import JOURNAL_NAME, Journal
from specivod.engine.ports import TagSource
from specivod.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckReport:
    plan: Plan
    window_open: bool
    next_window: datetime | None
    held: dict[str, str] = field(default_factory=dict)
    """Releases ``policy.min_age`` or ``policy.attention_*`` hold back, each with why."""
    skipped: dict[str, str] = field(default_factory=dict)
    release: dict[str, Any] | None = None
    """``release_json`` of the target, else of the release holding the plan back."""
    release_line: str | None = None

    def as_json(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "deployed": plan.deployed,
            "candidates": [version.tag for version in plan.candidates],
            "target": plan.target.tag if plan.target else None,
            "latest": plan.latest.tag if plan.latest else None,
            "window_open": self.window_open,
            "next_window": self.next_window.isoformat() if self.next_window else None,
            "reason": plan.reason,
            "problem": plan.pin_problem,
            "held": dict(self.held),
            "skipped": dict(self.skipped),
            "release": self.release,
        }

    def as_text(self) -> str:
        plan = self.plan
        window = "open now" if self.window_open else "closed"
        upcoming = self.next_window.isoformat() if self.next_window else "none configured"
        candidates = ", ".join(version.tag for version in plan.candidates) or "none"
        return "\n".join(
            [
                f"deployed:    {plan.deployed or 'unknown'}",
                f"latest:      {plan.latest.tag if plan.latest else 'no semver tags'}",
                f"allowed:     {candidates}",
                f"next target: {plan.target.tag if plan.target else 'none'} ({plan.reason})",
                f"window:      {window}; next opening {upcoming}",
                *(f"held:        {tag}: {why}" for tag, why in self.held.items()),
                *(f"skipped:     {tag}: {why}" for tag, why in self.skipped.items()),
                *([f"release:     {self.release_line}"] if self.release_line else []),
            ]
        )


def deployed_version(settings: Settings) -> str | None:
    return compose.deployed_version(settings.deployment)


def _rolled_back(settings: Settings) -> dict[str, str]:
    """What the engine will skip; an absent journal (nothing ever upgraded) skips nothing."""
    try:
        if not (settings.state.dir / JOURNAL_NAME).exists():
            return {}
        with Journal(settings.state.dir) as journal:
            return journal.rolled_back_versions()
    except (OSError, JournalError) as problem:
        log.warning("versions rolled back before are not considered: %s", problem)
        return {}


def _skipped(settings: Settings, now: datetime) -> dict[str, str]:
    try:
        if not (settings.state.dir / JOURNAL_NAME).exists():
            return {}
        return Controls(settings.state.dir).state(now).skipped
    except (OSError, JournalError) as problem:
        log.warning("skipped versions are not considered: %s", problem)
        return {}


async def _held(
    settings: Settings, registry: TagSource, tags: list[str], deployed: str | None, now: datetime
) -> dict[str, str]:
    """What ``policy.min_age`` holds; ``check`` records its sightings like the daemon does."""
    if not settings.policy.min_age:
        return {}
    if isinstance(registry, RegistryClient):
        await record_sightings(registry, settings, tags, deployed, lambda: now)
    return held_releases(settings, tags, deployed, now)


async def _review(
    settings: Settings,
    registry: TagSource,
    tags: list[str],
    *,
    deployed: str | None,
    avoid: dict[str, str],
    held: dict[str, str],
) -> Review:
    """What the releases a plan could pick say about themselves (never raises on registry
    trouble: such a release is shown as unavailable)."""
    lookup: Lookup = _no_release_info
    if isinstance(registry, RegistryClient):
        lookup = functools.partial(ReleaseCatalog().lookup, registry)
    return await review_releases(lookup, settings, tags, deployed=deployed, avoid=avoid, held=held)


async def _no_release_info(tag: str) -> ReleaseLookup:
    return ReleaseUnavailable(tag, "this registry source cannot read release info")


async def inspect(settings: Settings, registry: TagSource, clock: Clock) -> CheckReport:
    deployed = deployed_version(settings)
    tags = await registry.list_tags()
    now = clock.now()
    skipped = _skipped(settings, now)
    by_age = await _held(settings, registry, tags, deployed, now)
    avoid = {**skipped, **_rolled_back(settings)}
    review = await _review(settings, registry, tags, deployed=deployed, avoid=avoid, held=by_age)
    plan, held = plan_with_review(
        settings, tags, deployed=deployed, avoid=avoid, held=by_age, review=review
    )
    release, line = describe_release(settings, shown_version(plan, held), review)
    windows = settings.windows()
    return CheckReport(
        plan, is_open(windows, now), next_opening(windows, now), held, skipped, release, line
    )


async def check(settings: Settings, registry: TagSource, clock: Clock, as_json: bool) -> int:
    report = await inspect(settings, registry, clock)
    backup, backup_line = await next_backup(settings)
    if as_json:
        emit_json({**report.as_json(), "next_backup": backup})
    else:
        say(report.as_text())
        say(f"backup:      {backup_line}")
    if report.plan.pin_problem is not None:
        (error if as_json else say)(  # --json keeps stdout one JSON object
            f"problem: {report.plan.pin_problem}; move to a release with "
            "`specivod upgrade --to VERSION --force`"
        )
        return 1
    return 0
