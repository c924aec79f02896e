"""policy.min_age: when a release counts as known, and how holds shape the plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from specivod.domain.planning import make_plan
from specivod.domain.versions import Step, VersionPolicy
from specivod.engine.sightings import Sightings, holds

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MIN_AGE = timedelta(hours=72)


def test_a_plausible_creation_time_counts_from_the_build(tmp_path: Path) -> None:
    sightings = Sightings(tmp_path)
    sightings.observe("0.2.0", "sha256:a", NOW - 5 * DAY, NOW)  # first seen just now

    assert holds(["0.2.0"], sightings.all(), MIN_AGE, NOW) == {}


def test_a_reproducible_build_time_counts_from_the_first_sighting(tmp_path: Path) -> None:
    sightings = Sightings(tmp_path)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    sightings.observe("0.2.0", "sha256:a", epoch, NOW - 2 * DAY)

    held = holds(["0.2.0"], sightings.all(), MIN_AGE, NOW)
    assert "first seen 2026-11-26T03:00:00+00:00" in held["0.2.0"]
    assert holds(["0.2.0"], sightings.all(), MIN_AGE, NOW + DAY) == {}


def test_a_creation_time_in_the_future_is_not_plausible(tmp_path: Path) -> None:
    sightings = Sightings(tmp_path)
    sightings.observe("0.2.0", "sha256:a", NOW + 30 * DAY, NOW)

    assert "first seen" in holds(["0.2.0"], sightings.all(), MIN_AGE, NOW)["0.2.0"]


def test_a_tag_whose_digest_changes_starts_again(tmp_path: Path) -> None:
    sightings = Sightings(tmp_path)
    sightings.observe("0.2.0", "sha256:a", None, NOW - 4 * DAY)
    sightings.observe("0.2.0", "sha256:a", None, NOW - DAY)  # same digest: first sighting kept
    assert holds(["0.2.0"], sightings.all(), MIN_AGE, NOW) == {}

    sightings.observe("0.2.0", "sha256:b", None, NOW)  # retagged

    assert sightings.all()["0.2.0"].first_seen == NOW
    assert "0.2.0" in holds(["0.2.0"], sightings.all(), MIN_AGE, NOW)


def test_an_unseen_tag_is_held_and_zero_min_age_holds_nothing(tmp_path: Path) -> None:
    assert "not seen yet" in holds(["0.2.0"], {}, MIN_AGE, NOW)["0.2.0"]
    assert holds(["0.2.0"], {}, timedelta(0), NOW) == {}


def test_sightings_survive_a_new_connection(tmp_path: Path) -> None:
    Sightings(tmp_path).observe("0.2.0", "sha256:a", None, NOW)

    assert Sightings(tmp_path).all()["0.2.0"].digest == "sha256:a"


TAGS = ["0.1.10", "0.1.11", "0.2.0", "0.2.1", "0.3.0"]
POLICY = VersionPolicy(">=0.1.0 <1.0.0", step=Step.MINOR)


def target(avoid: dict[str, str] | None = None, held: dict[str, str] | None = None) -> str | None:
    plan = make_plan(TAGS, "0.1.10", POLICY, avoid, held)
    return plan.target.tag if plan.target else None


def test_a_held_release_blocks_itself_and_everything_above_it() -> None:
    assert target() == "0.2.1"
    assert target(held={"0.2.0": "too new"}) == "0.1.11"
    assert target(held={"0.2.1": "too new"}) == "0.2.0"
    assert target(held={"0.1.11": "too new"}) is None
    plan = make_plan(TAGS, "0.1.10", POLICY, None, {"0.1.11": "first seen today"})
    assert "0.1.11 is held: first seen today" in plan.reason


def test_a_skipped_release_is_passed_over_but_a_held_one_is_not() -> None:
    assert target(avoid={"0.2.1": "skipped"}) == "0.2.0"
    assert target(avoid={"0.2.0": "skipped"}) == "0.2.1"
    assert target(avoid={"0.2.0": "skipped"}, held={"0.2.1": "new"}) == "0.1.11"
