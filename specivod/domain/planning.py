"""What to install next: the deployed version, the registry's tags and the policy, combined."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from specivod.domain.versions import Version, VersionPolicy, parse_tags, parse_version


@dataclass(frozen=True)
class Plan:
    deployed: str | None
    candidates: list[Version]
    target: Version | None
    latest: Version | None
    reason: str

    @property
    def upgrade_available(self) -> bool:
        return self.target is not None


def make_plan(tags: Iterable[str], deployed: str | None, policy: VersionPolicy) -> Plan:
    versions = parse_tags(tags)
    latest = versions[-1] if versions else None
    if deployed is None:
        return Plan(
            None,
            policy.candidates(versions, None),
            None,
            latest,
            "no version is pinned in the deployment",
        )
    current = parse_version(deployed)
    if current is None:
        return Plan(
            deployed,
            policy.candidates(versions, None),
            None,
            latest,
            f"the deployed version {deployed!r} is not semver; pin a release first",
        )
    candidates = policy.candidates(versions, current)
    target = policy.target(versions, current)
    if target is not None:
        reason = f"{target} is the highest allowed version within one {policy.step} step"
    elif candidates:
        reason = f"newer allowed versions exist, but none within one {policy.step} step"
    else:
        reason = f"{deployed} is the newest version allowed by range {policy.range!r}"
    return Plan(deployed, candidates, target, latest, reason)
