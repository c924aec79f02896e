"""Version parsing and the upgrade policy, with properties checked by hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specivod.domain.errors import PolicyError
from specivod.domain.planning import make_plan
from specivod.domain.versions import (
    Step,
    Version,
    VersionPolicy,
    parse_tags,
    parse_version,
    require_version,
    within_step,
)


@pytest.mark.parametrize(
    ("tag", "semver"),
    [
        ("0.1.10", "0.1.10"),
        ("v0.2.3", "0.2.3"),
        ("1.0.0-rc.1", "1.0.0-rc.1"),
        ("1.2.3+build.7", "1.2.3"),
    ],
)
def test_semver_tags_parse(tag: str, semver: str) -> None:
    version = parse_version(tag)
    assert version is not None
    assert version.semver == semver
    assert version.tag == tag


@pytest.mark.parametrize("tag", ["latest", "nightly", "0.1", "1", "", "~0.1", "main-abc123"])
def test_other_tags_are_ignored(tag: str) -> None:
    assert parse_version(tag) is None


def test_build_metadata_does_not_order() -> None:
    assert require_version("1.0.0+a") == require_version("1.0.0+b")
    assert require_version("1.0.0-rc.1") < require_version("1.0.0") < require_version("1.0.1")
    assert require_version("0.1.9") < require_version("0.1.10")


def test_the_issue_example_steps_one_minor() -> None:
    policy = VersionPolicy(">=0.1.10 <1.0.0", step=Step.MINOR)
    tags = ["0.1.10", "0.2.3", "0.3.1", "latest"]

    assert str(policy.target(parse_tags(tags), require_version("0.1.10"))) == "0.2.3"


@pytest.mark.parametrize(
    ("range_", "tags", "expected"),
    [
        ("~0.1", ["0.1.11", "0.1.12", "0.2.0"], "0.1.12"),
        ("^0.1.10", ["0.1.11", "0.2.0"], "0.1.11"),
        (">=0.1.10 <0.3", ["0.2.5", "0.3.0"], "0.2.5"),
        ("0.1.x", ["0.1.12", "0.2.0"], "0.1.12"),
    ],
)
def test_npm_ranges(range_: str, tags: list[str], expected: str) -> None:
    policy = VersionPolicy(range_, step=Step.ANY)
    target = policy.target(parse_tags(tags), require_version("0.1.10"))
    assert target is not None and target.tag == expected


def test_prereleases_only_when_enabled() -> None:
    tags = parse_tags(["0.1.11", "0.1.12-rc.1"])
    deployed = require_version("0.1.10")
    assert str(VersionPolicy("~0.1").target(tags, deployed)) == "0.1.11"
    assert str(VersionPolicy("~0.1", prerelease=True).target(tags, deployed)) == "0.1.12-rc.1"


@pytest.mark.parametrize(
    ("step", "expected"),
    [(Step.PATCH, "0.1.12"), (Step.MINOR, "0.2.3"), (Step.MAJOR, "1.4.0"), (Step.ANY, "2.0.0")],
)
def test_step_limits_the_move(step: Step, expected: str) -> None:
    tags = parse_tags(["0.1.12", "0.2.3", "0.3.1", "1.4.0", "2.0.0"])
    assert str(VersionPolicy("*", step=step).target(tags, require_version("0.1.10"))) == expected


def test_bad_range_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="invalid version range 'nonsense'"):
        VersionPolicy("nonsense")


def test_plan_explains_a_missing_intermediate_release() -> None:
    plan = make_plan(["0.1.10", "0.3.0"], "0.1.10", VersionPolicy("*"))
    assert plan.target is None
    assert [v.tag for v in plan.candidates] == ["0.3.0"]
    assert "none within one minor step" in plan.reason
    assert plan.latest is not None and plan.latest.tag == "0.3.0"


def test_plan_skips_versions_to_avoid_and_says_why() -> None:
    tags = ["0.1.10", "0.2.0", "0.2.1", "0.2.3"]

    plan = make_plan(tags, "0.1.10", VersionPolicy("*"), {"0.2.3": "rolled back in #4"})

    assert plan.target is not None and plan.target.tag == "0.2.1"
    assert [v.tag for v in plan.candidates] == ["0.2.0", "0.2.1", "0.2.3"]
    assert plan.latest is not None and plan.latest.tag == "0.2.3"
    assert plan.reason.endswith("skipped: 0.2.3 (rolled back in #4)")


def test_plan_with_unpinned_or_unparseable_deployment() -> None:
    assert "not semver" in make_plan(["0.1.10"], "latest", VersionPolicy("*")).reason
    assert make_plan(["0.1.10"], None, VersionPolicy("*")).target is None


versions = st.builds(
    lambda major, minor, patch, pre: f"{major}.{minor}.{patch}" + (f"-rc.{pre}" if pre else ""),
    st.integers(0, 3),
    st.integers(0, 5),
    st.integers(0, 12),
    st.one_of(st.none(), st.integers(1, 3)),
)
ranges = st.sampled_from(["*", "~0.1", "^0.1.3", ">=0.1.0 <0.4", "0.2.x", "^1.0.0", ">=1.2.0"])


@settings(max_examples=400, deadline=None)
@given(
    tags=st.lists(versions, max_size=30),
    deployed=versions,
    range_=ranges,
    prerelease=st.booleans(),
    step=st.sampled_from(list(Step)),
)
def test_target_obeys_every_rule(
    tags: list[str], deployed: str, range_: str, prerelease: bool, step: Step
) -> None:
    policy = VersionPolicy(range_, prerelease=prerelease, step=step)
    current = require_version(deployed)
    target = policy.target(parse_tags(tags), current)
    if target is None:
        assert not any(
            policy.allows(v) and v > current and within_step(current, v, step)
            for v in parse_tags(tags)
        )
        return
    assert target.tag in tags
    assert target > current
    assert policy.allows(target)
    assert prerelease or not target.is_prerelease
    assert within_step(current, target, step)
    better = [
        v
        for v in parse_tags(tags)
        if v > target and policy.allows(v) and within_step(current, v, step)
    ]
    assert better == []


@given(st.lists(versions, max_size=20))
def test_parse_tags_sorts_ascending(tags: list[str]) -> None:
    parsed: list[Version] = parse_tags([*tags, "latest"])
    assert parsed == sorted(parsed)
    assert len(parsed) == len(tags)


def test_plan_when_every_newer_version_was_rolled_back() -> None:
    avoid = {"0.1.11": "rolled back in #2"}

    plan = make_plan(["0.1.10", "0.1.11"], "0.1.10", VersionPolicy("*"), avoid)

    assert plan.target is None
    assert plan.reason == (
        "every newer allowed version was rolled back before; skipped: 0.1.11 (rolled back in #2)"
    )


def test_a_loosely_written_range_is_refused_not_guessed() -> None:
    with pytest.raises(PolicyError, match=r"invalid version range '~1\.2\.3beta'"):
        VersionPolicy("~1.2.3beta")


def test_a_version_is_not_less_than_itself_or_an_equal_build() -> None:
    plain, built = require_version("1.0.0"), require_version("v1.0.0+build.7")

    assert not plain < require_version("1.0.0")
    assert not plain < built and not built < plain
    assert plain <= built and plain >= built
    assert require_version("1.0.0-rc.1") < plain


@pytest.mark.parametrize(
    ("deployed", "problem", "reason"),
    [
        (None, "the deployment pins no version", "no version is pinned in the deployment"),
        (
            "latest",
            "the deployment pins 'latest', not a semver release",
            "the deployed version 'latest' is not semver; pin a release first",
        ),
    ],
)
def test_a_plan_from_no_pin_or_a_non_semver_pin_names_the_problem(
    deployed: str | None, problem: str, reason: str
) -> None:
    plan = make_plan(["0.1.10", "0.2.0-rc.1", "0.1.11"], deployed, VersionPolicy("~0.1"))

    assert (plan.deployed, plan.target, plan.pin_problem, plan.reason) == (
        deployed,
        None,
        problem,
        reason,
    )
    assert [v.tag for v in plan.candidates] == ["0.1.10", "0.1.11"]
    assert plan.latest is not None and plan.latest.tag == "0.2.0-rc.1"
    assert make_plan([], deployed, VersionPolicy("*")).latest is None


def test_a_held_release_blocks_itself_and_every_release_above_it() -> None:
    tags = ["0.1.10", "0.1.11", "0.1.12", "0.1.13"]
    held = {"0.1.12": "first seen 2h ago", "0.1.13": "first seen 1h ago"}

    plan = make_plan(tags, "0.1.10", VersionPolicy("*"), held=held)
    assert plan.target is not None and plan.target.tag == "0.1.11"
    assert plan.deployed == "0.1.10"
    assert plan.reason == (
        "0.1.11 is the highest allowed version within one minor step; "
        "held: 0.1.12 (first seen 2h ago)"
    )

    plan = make_plan(tags, "0.1.10", VersionPolicy("*"), held={"0.1.11": "first seen now"})
    assert plan.target is None
    assert plan.reason == "0.1.11 is held: first seen now"


def test_only_newer_allowed_avoided_versions_are_reported_as_skipped() -> None:
    tags = ["0.1.9", "0.1.10", "0.1.11", "0.1.12", "0.3.0"]
    avoid = {"0.1.9": "rolled back", "0.1.12": "rolled back", "0.3.0": "skipped by hand"}

    plan = make_plan(tags, "0.1.10", VersionPolicy("~0.1"), avoid)

    assert plan.target is not None and plan.target.tag == "0.1.11"
    assert plan.reason.endswith("; skipped: 0.1.12 (rolled back)")
    older = make_plan(tags, "0.1.10", VersionPolicy("~0.1"), {"0.1.9": "rolled back"})
    assert "skipped" not in older.reason
    two = make_plan(tags, "0.1.8", VersionPolicy("~0.1", step=Step.PATCH), avoid)
    assert two.reason.endswith("; skipped: 0.1.9 (rolled back), 0.1.12 (rolled back)")


def test_a_plan_compares_versions_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the soak: the daemon plans several times a tick, and checking each tag against
    a list of the rolled-back ones cost tags x rolled-back semver comparisons on the event loop
    (1,000 tags and 100 rolled back: 2.9 s). Counted, not timed: this machine is shared."""
    tags = [f"1.{minor}.{patch}" for minor in range(20) for patch in range(100)]
    avoid = {tag: "rolled back" for tag in tags[::10]}
    compared = [0]
    compare = Version._compare

    def counting(self: Version, other: Version) -> int:
        compared[0] += 1
        return compare(self, other)

    monkeypatch.setattr(Version, "_compare", counting)
    plan = make_plan(tags, "1.0.0", VersionPolicy("*", step=Step.ANY), avoid=avoid)

    assert plan.target is not None and plan.target.tag == "1.19.99"
    assert compared[0] < 150_000, compared[0]
