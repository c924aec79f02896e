"""``specivod check``: the deployed version, what the policy allows, the next target, and the
maintenance window."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from specivod.adapters import compose
from specivod.adapters.clock import Clock
from specivod.adapters.protocols import Registry
from specivod.commands.output import emit_json, say
from specivod.domain.errors import JournalError
from specivod.domain.planning import Plan, make_plan
from specivod.domain.windows import is_open, next_opening
from specivod.engine.journal import JOURNAL_NAME, Journal
from specivod.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckReport:
    plan: Plan
    window_open: bool
    next_window: datetime | None

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


async def inspect(settings: Settings, registry: Registry, clock: Clock) -> CheckReport:
    deployed = deployed_version(settings)
    tags = await registry.list_tags()
    plan = make_plan(tags, deployed, settings.policy.version_policy(), _rolled_back(settings))
    now = clock.now()
    windows = settings.windows()
    return CheckReport(plan, is_open(windows, now), next_opening(windows, now))


async def check(settings: Settings, registry: Registry, clock: Clock, as_json: bool) -> int:
    report = await inspect(settings, registry, clock)
    if as_json:
        emit_json(report.as_json())
    else:
        say(report.as_text())
    if report.plan.pin_problem is not None:
        say(
            f"problem: {report.plan.pin_problem}; move to a release with "
            "`specivod upgrade --to VERSION --force`"
        )
        return 1
    return 0
