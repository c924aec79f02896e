"""The target an unattended upgrade would go to now: the engine's plan with every reason not to
pick a version applied — rolled back before or skipped by an operator (passed over), or held by
``policy.min_age`` (blocks itself and everything above)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from specivod.domain.planning import make_plan
from specivod.domain.versions import parse_tags, parse_version
from specivod.engine.controls import ControlState
from specivod.engine.journal import Journal
from specivod.engine.sightings import Sightings, holds
from specivod.settings import Settings


@dataclass(frozen=True)
class DaemonPlan:
    target: str | None
    reason: str
    held: dict[str, str] = field(default_factory=dict)
    pin_problem: str | None = None


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


def plan_unattended(
    settings: Settings,
    tags: list[str] | None,
    *,
    deployed: str | None,
    controls: ControlState,
    journal: Journal,
    now: datetime,
) -> DaemonPlan | None:
    """``None`` before the first successful poll."""
    if tags is None:
        return None
    avoid = {**controls.skipped, **journal.rolled_back_versions()}
    held = held_releases(settings, tags, deployed, now)
    plan = make_plan(tags, deployed, settings.policy.version_policy(), avoid, held)
    return DaemonPlan(
        target=plan.target.tag if plan.target else None,
        reason=plan.reason,
        held=held,
        pin_problem=plan.pin_problem,
    )
