"""The target an upgrade without ``--to`` goes to now (the daemon's, and a plain ``upgrade`` from
cron): the engine's plan with every reason not to pick a version applied — rolled back before or
skipped by an operator (passed over), held by ``policy.min_age`` or marked by the publisher as
needing a person (a hold blocks itself and everything above it).

Rule: a release's info is read for the allowed releases from the deployed one up to the target,
lowest first, stopping at the first one marked for attention; info that cannot be read never
holds a release (a registry error must not block an upgrade), but a release whose info was never
asked for is not a target while an attention rule is configured.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from specivod.adapters.registry.release import ReleaseLookup
from specivod.domain.planning import Plan, make_plan
from specivod.domain.releases import ReleaseInfo, notes_link, release_json, release_line
from specivod.domain.versions import parse_tags, parse_version
from specivod.engine.controls import ControlState
from specivod.engine.journal import Journal
from specivod.engine.sightings import Sightings, holds
from specivod.settings import Settings

Lookup = Callable[[str], Awaitable[ReleaseLookup]]
NOT_READ = "its release info was not read yet (policy.attention_* is configured)"


@dataclass(frozen=True)
class Review:
    """What the releases that could be installed next say about themselves."""

    held: dict[str, str] = field(default_factory=dict)
    """Releases marked for attention, each with why."""
    releases: dict[str, ReleaseLookup] = field(default_factory=dict)


@dataclass(frozen=True)
class DaemonPlan:
    target: str | None
    reason: str
    held: dict[str, str] = field(default_factory=dict)
    pin_problem: str | None = None
    release: dict[str, Any] | None = None
    """``release_json`` of the target, or of the release that holds the plan back."""
    release_line: str | None = None


def held_releases(
    settings: Settings, tags: list[str], deployed: str | None, now: datetime
) -> dict[str, str]:
    """Allowed releases newer than ``deployed`` that ``policy.min_age`` still holds."""
    if not settings.policy.min_age:
        return {}
    current = parse_version(deployed) if deployed else None
    candidates = settings.policy.version_policy().candidates(parse_tags(tags), current)
    sightings = Sightings(settings.state.dir).all()
    return holds([v.tag for v in candidates], sightings, settings.policy.min_age, now)


def attention_hold(version: str, reason: str) -> str:
    return f"{reason}; a person installs it with `specivod upgrade --to {version}`"


async def review_releases(
    lookup: Lookup,
    settings: Settings,
    tags: list[str],
    *,
    deployed: str | None,
    avoid: Mapping[str, str],
    held: Mapping[str, str],
) -> Review:
    """Read the releases a plan could pick (see the module rule) and the one it shows."""
    policy = settings.policy.version_policy()
    rule = settings.policy.attention_rule()
    releases: dict[str, ReleaseLookup] = {}
    marked: dict[str, str] = {}
    plan = make_plan(tags, deployed, policy, avoid, held)
    if rule.configured and plan.target is not None:
        for version in plan.candidates:
            if version > plan.target:
                break
            if version.tag in avoid:
                continue
            found = releases[version.tag] = await lookup(version.tag)
            reason = rule.reason(found) if isinstance(found, ReleaseInfo) else None
            if reason is not None:
                marked[version.tag] = attention_hold(version.tag, reason)
                break
    plan = make_plan(tags, deployed, policy, avoid, {**held, **marked})
    shown = shown_version(plan, {**held, **marked})
    if shown is not None and shown not in releases:
        releases[shown] = await lookup(shown)
    return Review(marked, releases)


def shown_version(plan: Plan, held: Mapping[str, str]) -> str | None:
    """The release a person should read about: the target, else the lowest held candidate."""
    if plan.target is not None:
        return plan.target.tag
    blocking = [version.tag for version in plan.candidates if version.tag in held]
    return blocking[0] if blocking else None


def plan_with_review(
    settings: Settings,
    tags: list[str],
    *,
    deployed: str | None,
    avoid: Mapping[str, str],
    held: Mapping[str, str],
    review: Review | None,
) -> tuple[Plan, dict[str, str]]:
    """The plan with min-age and attention holds, and every hold with why."""
    every = {**held, **(review.held if review else {})}
    policy = settings.policy.version_policy()
    plan = make_plan(tags, deployed, policy, avoid, every)
    if settings.policy.attention_rule().configured:
        read = review.releases if review else {}
        while plan.target is not None and plan.target.tag not in read:
            every[plan.target.tag] = NOT_READ
            plan = make_plan(tags, deployed, policy, avoid, every)
    return plan, every


def describe_release(
    settings: Settings, version: str | None, review: Review | None
) -> tuple[dict[str, Any] | None, str | None]:
    """(``release_json``, ``release_line``) of ``version``; None when there is no version."""
    if version is None:
        return None, None
    found = review.releases.get(version) if review else None
    notes = notes_link(settings.policy.release_notes, version)
    return release_json(version, found, notes), release_line(version, found, notes)


def plan_unattended(
    settings: Settings,
    tags: list[str] | None,
    *,
    deployed: str | None,
    controls: ControlState,
    journal: Journal,
    now: datetime,
    review: Review | None = None,
) -> DaemonPlan | None:
    """``None`` before the first successful poll."""
    if tags is None:
        return None
    avoid = unattended_avoid(controls, journal)
    held = held_releases(settings, tags, deployed, now)
    plan, every = plan_with_review(
        settings, tags, deployed=deployed, avoid=avoid, held=held, review=review
    )
    release, line = describe_release(settings, shown_version(plan, every), review)
    return DaemonPlan(
        target=plan.target.tag if plan.target else None,
        reason=plan.reason,
        held=every,
        pin_problem=plan.pin_problem,
        release=release,
        release_line=line,
    )


def unattended_avoid(controls: ControlState, journal: Journal) -> dict[str, str]:
    """Releases a plan passes over: skipped by an operator, or rolled back before."""
    return {**controls.skipped, **journal.rolled_back_versions()}
