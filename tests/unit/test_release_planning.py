"""Releases held for a person: a label or a description pattern holds the marked release and
everything above it, for the daemon (its plan and status API) as for ``check``; info that cannot be
read holds nothing; the daemon does not read unchanged tags again; the notes link and the config
keys are checked at load (exit 78 naming the key)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from specivod.cli import main
from specivod.daemon.planner import NOT_READ, Review, plan_with_review, review_releases
from specivod.domain.errors import RegistryUnavailable
from specivod.domain.releases import OCI, ReleaseInfo, notes_link, release_line
from specivod.settings import Settings
from tests.unit.test_daemon_service import NOW, TAGS, daemon, settings

MARK = {"name": "com.specivo.notice", "value": "manual-steps"}


class FakeReleases:
    """A registry answering digests and release info from ``labels`` (tag → labels); counts
    requests; ``failing`` makes every request a 503. Also its own async context manager."""

    def __init__(self, labels: dict[str, dict[str, str]] | None = None) -> None:
        self.labels = labels or {}
        self.heads: list[str] = []
        self.reads: list[str] = []
        self.failing = False

    async def __aenter__(self) -> FakeReleases:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def manifest_digest(self, tag: str) -> str:
        self.heads.append(tag)
        if self.failing:
            raise RegistryUnavailable("registry fake: HEAD answered 503 (4 attempts)")
        return "sha256:" + hashlib.sha256(tag.encode()).hexdigest()

    async def release_info(self, tag: str, digest: str | None = None) -> ReleaseInfo:
        self.reads.append(tag)
        return ReleaseInfo(tag, digest or "", dict(self.labels.get(tag, {})))


def marked(**extra: str) -> dict[str, str]:
    return {MARK["name"]: MARK["value"], **extra}


async def review(
    made: Settings, releases: FakeReleases, tags: list[str], deployed: str = "0.1.10"
) -> Review:
    async def lookup(tag: str) -> Any:
        from specivod.adapters.registry.release import ReleaseCatalog

        return await ReleaseCatalog().lookup(releases, tag)

    return await review_releases(lookup, made, tags, deployed=deployed, avoid={}, held={})


TAGS3 = ["0.1.10", "0.1.11", "0.1.12", "0.1.13"]


async def test_a_marked_release_blocks_itself_and_everything_above(tmp_path: Path) -> None:
    made = settings(tmp_path, attention_label=MARK, range="~0.1")
    releases = FakeReleases({"0.1.12": marked()})

    found = await review(made, releases, TAGS3)
    plan, held = plan_with_review(made, TAGS3, deployed="0.1.10", avoid={}, held={}, review=found)

    assert plan.target is not None and plan.target.tag == "0.1.11"
    assert list(held) == ["0.1.12"]
    assert "com.specivo.notice=manual-steps" in held["0.1.12"]
    assert "upgrade --to 0.1.12" in held["0.1.12"]
    assert releases.reads == ["0.1.11", "0.1.12"]  # 0.1.13 is above the hold: never read


async def test_with_the_marked_release_next_nothing_is_planned(tmp_path: Path) -> None:
    made = settings(tmp_path, attention_pattern="(?i)breaking change", range="~0.1")
    text = {OCI + "description": "Fixes.\nBREAKING CHANGE: run the reindex by hand."}
    releases = FakeReleases({"0.1.11": text})

    found = await review(made, releases, TAGS3)
    plan, held = plan_with_review(made, TAGS3, deployed="0.1.10", avoid={}, held={}, review=found)

    assert plan.target is None
    assert "description matches 'BREAKING CHANGE'" in held["0.1.11"]
    assert plan.reason.startswith("0.1.11 is held: marked for attention")


async def test_a_release_whose_info_cannot_be_read_is_not_held(tmp_path: Path) -> None:
    made = settings(tmp_path, attention_label=MARK, range="~0.1")
    releases = FakeReleases({"0.1.12": marked()})
    releases.failing = True

    found = await review(made, releases, TAGS3)
    plan, held = plan_with_review(made, TAGS3, deployed="0.1.10", avoid={}, held={}, review=found)

    assert plan.target is not None and plan.target.tag == "0.1.13"
    assert held == {}
    line = release_line("0.1.13", found.releases["0.1.13"], None)
    assert (
        line == "release 0.1.13: release notes unavailable: "
        "registry fake: HEAD answered 503 (4 attempts)"
    )


def test_a_target_never_reviewed_is_not_picked_while_a_rule_is_configured(
    tmp_path: Path,
) -> None:
    made = settings(tmp_path, attention_label=MARK, range="~0.1")
    partial = Review(releases={"0.1.11": ReleaseInfo("0.1.11", "sha256:1")})

    plan, held = plan_with_review(made, TAGS3, deployed="0.1.10", avoid={}, held={}, review=partial)

    assert plan.target is not None and plan.target.tag == "0.1.11"
    assert held == {"0.1.13": NOT_READ, "0.1.12": NOT_READ}


async def test_the_daemon_holds_a_marked_release_and_says_so_in_its_status(
    tmp_path: Path,
) -> None:
    releases = FakeReleases({"0.2.0": marked(**{OCI + "title": "Specivo 0.2"})})
    made, _ = daemon(
        tmp_path,
        releases=releases,
        attention_label=MARK,
        release_notes="https://example.org/releases/tag/v{version}",
    )

    await made.review_releases(NOW)
    made.decide(NOW)

    assert made.plan is not None and made.plan.target == "0.1.11"
    assert "marked for attention" in made.plan.held["0.2.0"]
    status = made.status()["daemon"]
    assert "0.2.0" in status["held"]
    assert status["release"]["version"] == "0.1.11"
    assert status["release"]["notes"] == "https://example.org/releases/tag/v0.1.11"
    assert made.view().held == ("0.2.0",)


async def test_the_daemon_shows_the_holding_release_when_nothing_else_is_allowed(
    tmp_path: Path,
) -> None:
    releases = FakeReleases({"0.1.11": marked(**{OCI + "title": "Specivo 0.1.11"})})
    made, _ = daemon(tmp_path, releases=releases, attention_label=MARK)

    await made.review_releases(NOW)
    made.decide(NOW)

    assert made.plan is not None and made.plan.target is None
    assert made.plan.release is not None
    assert made.plan.release["labels"] == {OCI + "title": "Specivo 0.1.11"}


async def test_the_daemon_reads_an_unchanged_release_once_and_its_digest_once_a_poll(
    tmp_path: Path,
) -> None:
    releases = FakeReleases()
    made, _ = daemon(tmp_path, releases=releases, attention_label=MARK)

    for _ in range(5):
        await made.review_releases(NOW)
    assert releases.reads == ["0.1.11", "0.2.0"]
    assert releases.heads == ["0.1.11", "0.2.0"]

    made.poller.state.last_success = NOW  # a new poll: the tags may have moved
    await made.review_releases(NOW)
    assert releases.reads == ["0.1.11", "0.2.0"]
    assert releases.heads == ["0.1.11", "0.2.0"] * 2
    assert TAGS[-1] == "latest"


def test_notes_link_replaces_version_and_keeps_escaped_braces() -> None:
    assert notes_link("https://x.org/{{raw}}/v{version}", "1.2.3") == "https://x.org/{raw}/v1.2.3"
    assert notes_link(None, "1.2.3") is None


@pytest.mark.parametrize(
    ("line", "key", "reason"),
    [
        ('release_notes = "https://x.org/{tag}"', "policy.release_notes", "only {version}"),
        ('release_notes = "https://x.org/{version:>9}"', "policy.release_notes", "format spec"),
        ('release_notes = "https://x.org/{version"', "policy.release_notes", "valid template"),
        ('release_notes = "/releases/{version}"', "policy.release_notes", "http(s) URL"),
        ('attention_pattern = "(unclosed"', "policy.attention_pattern", "regular expression"),
        ('attention_label = { name = "x" }', "policy.attention_label.value", "Field required"),
        ('attention_label = { name = "", value = "v" }', "policy.attention_label.name", "at least"),
    ],
)
def test_bad_release_keys_exit_78_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, key: str, reason: str
) -> None:
    config = tmp_path / "specivod.toml"
    config.write_text(
        f'[registry]\nimage = "127.0.0.1:5000/specivo/specivo"\n[policy]\n{line}\n'
        f'[deployment]\nproject_dir = "{tmp_path}"\n'
    )

    code = main(["--config", str(config), "config", "check"])

    err = capsys.readouterr().err
    assert code == 78, err
    assert f"{config}: {key}: " in err and reason in err
