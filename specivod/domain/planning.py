"""What to install next: the deployed version, the registry's tags and the policy, combined."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from specivod.domain.versions import Version, VersionPolicy, parse_tags, parse_version


@dataclass(frozen=True)
class Plan:
    deployed: str | None
    candidates: list[Version]
    target: Version | None
    latest: Version | None
    reason: str
    pin_problem: str | None = None
    """Set when the deployment pins no semver release: nothing can be planned from it."""

    @property
    def upgrade_available(self) -> bool:
        return self.target is not None


def make_plan(
    tags: Iterable[str],
    deployed: str | None,
    policy: VersionPolicy,
    avoid: Mapping[str, str] | None = None,
    held: Mapping[str, str] | None = None,
) -> Plan:
    """The next version to install. ``avoid`` maps tags never to pick as the target to the reason
    (rolled back before, skipped by an operator); the planner may pass over them to a higher one.
    ``held`` maps tags not yet eligible (``policy.min_age``) to the reason: an allowed held
    release blocks itself and every release above it, so the policy never jumps over it. Both
    stay among the candidates the policy allows."""
    versions = parse_tags(tags)
    latest = versions[-1] if versions else None
    avoided = [version for version in versions if avoid and version.tag in avoid]
    avoided_set = set(avoided)  # membership by hash: a list made each tick O(tags x avoided)
    eligible = [version for version in versions if version not in avoided_set]
    if deployed is None:
        return Plan(
            None,
            policy.candidates(versions, None),
            None,
            latest,
            "no version is pinned in the deployment",
            pin_problem="the deployment pins no version",
        )
    current = parse_version(deployed)
    if current is None:
        return Plan(
            deployed,
            policy.candidates(versions, None),
            None,
            latest,
            f"the deployed version {deployed!r} is not semver; pin a release first",
            pin_problem=f"the deployment pins {deployed!r}, not a semver release",
        )
    candidates = policy.candidates(versions, current)
    blocking = [v for v in candidates if held and v.tag in held and v not in avoided_set]
    if blocking:
        eligible = [version for version in eligible if version < blocking[0]]
    target = policy.target(eligible, current)
    if target is not None:
        reason = f"{target} is the highest allowed version within one {policy.step} step"
    elif blocking:
        reason = f"{blocking[0].tag} is held: {held[blocking[0].tag] if held else ''}"
    elif policy.candidates(eligible, current):
        reason = f"newer allowed versions exist, but none within one {policy.step} step"
    elif candidates:
        reason = "every newer allowed version was rolled back before"
    else:
        reason = f"{deployed} is the newest version allowed by range {policy.range!r}"
    skipped = policy.candidates(avoided, current)
    if skipped and avoid:
        reason += "; skipped: " + ", ".join(f"{v.tag} ({avoid[v.tag]})" for v in skipped)
    if blocking and target is not None:
        reason += f"; held: {blocking[0].tag} ({held[blocking[0].tag] if held else ''})"
    return Plan(deployed, candidates, target, latest, reason)
