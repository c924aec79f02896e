"""Versions and the upgrade policy.

Tags are read as semver (a leading ``v`` tolerated); tags that are not semver (``latest``,
``nightly``, ``0.1``) are ignored. Ranges use npm syntax through ``node-semver``, the Python port of
npm's own implementation. Build metadata never affects ordering. The policy picks the highest
allowed version that is at most one ``step`` away from the deployed one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import nodesemver

from specivod.domain.errors import PolicyError


class Step(StrEnum):
    """How far one upgrade may move."""

    PATCH = "patch"
    MINOR = "minor"
    MAJOR = "major"
    ANY = "any"


@functools.total_ordering
@dataclass(frozen=True, eq=False)
class Version:
    """A semver release as found in the registry: the original tag and its parsed form."""

    tag: str
    _parsed: Any = field(repr=False, compare=False)

    @property
    def major(self) -> int:
        return int(self._parsed.major)

    @property
    def minor(self) -> int:
        return int(self._parsed.minor)

    @property
    def patch(self) -> int:
        return int(self._parsed.patch)

    @property
    def is_prerelease(self) -> bool:
        return bool(self._parsed.prerelease)

    @property
    def semver(self) -> str:
        """The version without a ``v`` prefix and without build metadata."""
        return str(self._parsed.version)

    def _compare(self, other: Version) -> int:
        result = self._parsed.compare(other._parsed)
        return int(result)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._compare(other) == 0

    def __lt__(self, other: Version) -> bool:
        return self._compare(other) < 0

    def __hash__(self) -> int:
        return hash(self.semver)

    def __str__(self) -> str:
        return self.tag


def parse_version(tag: str) -> Version | None:
    """The tag as a ``Version``, or ``None`` when it is not semver."""
    text = tag.strip()
    if not text or text[0] in "=<>~^":
        return None
    try:
        parsed = nodesemver.make_semver(text, False)
    except (ValueError, TypeError):
        return None
    return Version(tag=tag, _parsed=parsed)


def require_version(tag: str) -> Version:
    """Like ``parse_version`` but a non-semver tag is an error naming the tag."""
    version = parse_version(tag)
    if version is None:
        raise PolicyError(f"{tag!r} is not a semver version (expected e.g. 0.1.11 or v0.1.11)")
    return version


def within_step(current: Version, candidate: Version, step: Step) -> bool:
    """True when moving from ``current`` to ``candidate`` is at most one ``step``."""
    if step is Step.ANY:
        return True
    if step is Step.MAJOR:
        return candidate.major <= current.major + 1
    if candidate.major != current.major:
        return False
    if step is Step.MINOR:
        return candidate.minor <= current.minor + 1
    return candidate.minor == current.minor


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions may be installed, and how far one upgrade may go."""

    range: str
    prerelease: bool = False
    step: Step = Step.MINOR
    _range: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            parsed = nodesemver.make_range(self.range, False)
        except (ValueError, TypeError) as error:
            raise PolicyError(f"invalid version range {self.range!r}: {error}") from None
        if parsed is None:
            raise PolicyError(f"invalid version range {self.range!r}")
        object.__setattr__(self, "_range", parsed)

    def allows(self, version: Version) -> bool:
        """In range, and not a pre-release unless pre-releases are enabled."""
        if version.is_prerelease and not self.prerelease:
            return False
        return bool(self._range.test(version.semver, include_prerelease=self.prerelease))

    def candidates(self, versions: Iterable[Version], deployed: Version | None) -> list[Version]:
        """Allowed versions newer than ``deployed`` (all allowed ones when it is unknown),
        ascending, one entry per semver (the first tag seen wins among ``v1.0.0``/``1.0.0+b``)."""
        unique: dict[str, Version] = {}
        for version in versions:
            if self.allows(version) and (deployed is None or version > deployed):
                unique.setdefault(version.semver, version)
        return sorted(unique.values())

    def target(self, versions: Iterable[Version], deployed: Version) -> Version | None:
        """The next version to install from ``deployed``, or ``None`` when there is none."""
        reachable = [
            version
            for version in self.candidates(versions, deployed)
            if within_step(deployed, version, self.step)
        ]
        return reachable[-1] if reachable else None


def parse_tags(tags: Iterable[str]) -> list[Version]:
    """Every semver tag among ``tags``, ascending; other tags are dropped."""
    return sorted(version for tag in tags if (version := parse_version(tag)) is not None)
