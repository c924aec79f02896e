"""The daemon's decisions with a fake clock: pause --until, skip, min_age holds, a person needed,
a non-release pin; SIGHUP reloads; an alert during verification vetoes it; handled alerts are
journaled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from specivod.daemon.notify import Notifier
from specivod.daemon.service import Daemon
from specivod.domain.alerts import AlertKey
from specivod.domain.errors import ConfigError
from specivod.domain.states import State
from specivod.engine.controls import Action, Controls
from specivod.engine.handled_alerts import HandledAlerts
from specivod.engine.journal import Kind
from specivod.engine.sightings import Sightings
from specivod.settings import Settings
from specivod.web.webhook import LastUpgrade, RollbackRequest
from tests.unit.engine_kit import make_kit
from tests.unit.fakes import FakeClock, World

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)  # a Saturday
TAGS = ["0.1.10", "0.1.11", "0.2.0", "latest"]


def settings(tmp_path: Path, pinned: str = "0.1.10", **policy: Any) -> Settings:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / ".env").write_text(f"SPECIVO_VERSION={pinned}\n")
    return Settings(
        registry={"image": "127.0.0.1:5000/specivo/specivo", "poll_interval": "1m"},
        deployment={"project_dir": project},
        state={"dir": tmp_path / "state"},
        backup={"dir": tmp_path / "backups"},
        policy={"range": ">=0.1.0 <1.0.0", **policy},
        window=[{"days": ["sat"], "start": "02:00", "end": "06:00", "timezone": "UTC"}],
    )


def daemon(tmp_path: Path, releases: Any = None, **kwargs: Any) -> tuple[Daemon, FakeClock]:
    """A daemon on ``TAGS``; ``releases`` answers its release-info reads (default: a registry
    whose releases say nothing, so no test reaches for the network)."""
    from tests.unit.test_release_planning import FakeReleases

    clock = FakeClock(NOW)
    source = releases or FakeReleases()
    made = Daemon(
        settings(tmp_path, **kwargs),
        tmp_path / "c.toml",
        clock=clock,
        open_registry=lambda _: source,
    )
    made.poller.state.tags = list(TAGS)
    return made, clock


def test_an_open_window_with_room_and_a_target_may_start(tmp_path: Path) -> None:
    made, _ = daemon(tmp_path)

    gate = made.decide(NOW)

    assert gate.may_start, gate.blocked_by
    assert made.plan is not None and made.plan.target == "0.2.0"


def test_pause_until_blocks_then_lapses(tmp_path: Path) -> None:
    made, _ = daemon(tmp_path)
    Controls(made.settings.state.dir).record(Action.PAUSE, NOW, until=NOW + timedelta(hours=1))

    assert "paused by an operator until" in (made.decide(NOW).blocked_by or "")
    assert made.snapshot().paused
    assert made.decide(NOW + timedelta(hours=1)).may_start
    assert not made.snapshot().paused


def test_a_skipped_version_is_not_the_target(tmp_path: Path) -> None:
    made, _ = daemon(tmp_path)
    Controls(made.settings.state.dir).record(Action.SKIP, NOW, version="0.2.0")

    made.decide(NOW)

    assert made.plan is not None and made.plan.target == "0.1.11"
    assert made.view().skipped == ("0.2.0",)


def test_min_age_holds_a_release_seen_too_recently(tmp_path: Path) -> None:
    made, _ = daemon(tmp_path, min_age="72h")
    sightings = Sightings(made.settings.state.dir)
    sightings.observe("0.1.11", "sha256:a", None, NOW - timedelta(days=4))
    sightings.observe("0.2.0", "sha256:b", None, NOW - timedelta(days=1))

    made.decide(NOW)
    assert made.plan is not None and made.plan.target == "0.1.11"
    assert list(made.plan.held) == ["0.2.0"]

    made.decide(NOW + timedelta(days=2))
    assert made.plan is not None and made.plan.target == "0.2.0"


def test_a_pin_that_is_not_a_release_is_reported_not_retried(tmp_path: Path) -> None:
    made, _ = daemon(tmp_path, pinned="latest")

    gate = made.decide(NOW)

    assert not gate.may_start
    assert "not a semver release" in (gate.blocked_by or "")
    assert made.view().pin_problem
    assert made.status()["daemon"]["pin_problem"]


def test_no_window_is_said_in_status_and_metrics(tmp_path: Path) -> None:
    made, _ = daemon(tmp_path)
    made.settings = made.settings.model_copy(update={"window": []})

    made.decide(NOW)

    status = made.status()
    assert status["daemon"]["unattended"] is False
    assert "never unattended" in status["daemon"]["blocked_by"]
    assert made.snapshot().windows_configured == 0


def test_sighup_with_a_bad_file_keeps_the_old_configuration(tmp_path: Path) -> None:
    made, _ = daemon(tmp_path)
    old = made.settings

    def bad(_path: Path) -> Settings:
        raise ConfigError("c.toml: policy.step: Input should be 'patch', 'minor'")

    made._load = bad
    made.reload()
    assert made.settings is old

    new = settings(tmp_path, step="patch")
    made._load = lambda _path: new
    made.reload()
    assert made.settings is new and made.poller.settings is new


async def test_an_alert_during_verification_fails_it_and_the_rollback_follows(
    tmp_path: Path,
) -> None:
    made, _ = daemon(tmp_path)
    kit = make_kit(tmp_path / "kit", World())
    kit.engine.context.gate.veto = made.vetoes
    original_report = kit.engine.context.report

    def report(transaction: Any, message: str) -> None:
        original_report(transaction, message)
        if transaction.state is State.VERIFYING:
            made.vetoes.reasons["0.2.0"] = "alertmanager: SpecivoDown"

    kit.engine.context.report = report

    result = await kit.engine.upgrade(to="0.2.0")

    assert result.transaction.state is State.ROLLED_BACK
    assert "verification vetoed: alertmanager: SpecivoDown" in (result.transaction.reason or "")
    assert kit.world.running == "0.1.10"  # the rollback's own verification was not vetoed


async def test_an_alert_for_the_upgrade_being_verified_vetoes_instead_of_rolling_back(
    tmp_path: Path,
) -> None:
    made, _ = daemon(tmp_path)
    transaction = made.journal.begin(
        Kind.UPGRADE, trigger="schedule", from_version="0.1.10", to_version="0.2.0", now=NOW
    )
    made.running = transaction
    key = AlertKey("abc", NOW)
    upgrade = LastUpgrade(str(transaction.id), "0.2.0", NOW, NOW)

    await made.alert_rollback(RollbackRequest(upgrade, ("SpecivoDown",), (key,), "group"))

    assert "SpecivoDown" in (made.vetoes("0.2.0") or "")
    assert made.vetoes("0.1.10") is None
    handled = HandledAlerts(made.settings.state.dir).load()
    assert handled.keys == (key,)
    assert handled.upgrades == (str(transaction.id),)


@pytest.mark.parametrize("state", [State.ROLLBACK_FAILED])
def test_a_failed_rollback_needs_a_person_until_resolved(tmp_path: Path, state: State) -> None:
    made, _ = daemon(tmp_path)
    journal = made.journal
    transaction = journal.begin(
        Kind.UPGRADE, trigger="schedule", from_version="0.1.10", to_version="0.2.0", now=NOW
    )
    for step in (
        State.BACKING_UP,
        State.PULLING,
        State.PINNED,
        State.STARTING,
        State.VERIFYING,
        State.ROLLING_BACK,
        state,
    ):
        transaction = journal.advance(transaction, step, now=NOW)

    gate = made.decide(NOW)
    assert "a person is needed" in (gate.blocked_by or "")
    assert made.view().needs_a_person
    assert made.status()["needs_attention"] is True

    Controls(made.settings.state.dir).record(Action.RESOLVE, NOW, transaction_id=transaction.id)

    assert made.decide(NOW).may_start
    assert not made.view().needs_a_person


async def test_an_alert_after_the_upgrade_rolls_it_back_with_the_alert_names(
    tmp_path: Path,
) -> None:
    made, _ = daemon(tmp_path)
    kit = make_kit(made.settings.state.dir, World())
    kit.engine.context.report = made.report

    @asynccontextmanager
    async def engine() -> AsyncIterator[Any]:
        yield kit.engine

    made._engine = engine  # type: ignore[method-assign]
    upgraded = (await kit.engine.upgrade(to="0.2.0")).transaction
    last = made.last_upgrade()
    assert last is not None and last.transaction_id == str(upgraded.id)
    key = AlertKey("abc", NOW)

    await made.alert_rollback(RollbackRequest(last, ("SpecivoDown",), (key,), "group"))

    rollback = made.journal.latest()
    assert rollback is not None and rollback.kind is Kind.ROLLBACK
    assert (rollback.trigger, rollback.state) == ("alertmanager", State.ROLLED_BACK)
    assert rollback.reason == f"alertmanager rollback of upgrade #{upgraded.id}: SpecivoDown"
    assert kit.world.running == "0.1.10"
    assert HandledAlerts(made.settings.state.dir).load().keys == (key,)
    made.refresh()
    assert made.totals.rollbacks == {("alertmanager", "false"): 1}

    await made.alert_rollback(RollbackRequest(last, ("SpecivoDown",), (key,), "group"))
    assert made.journal.latest() == rollback  # 0.2.0 is no longer deployed: nothing to do


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def _send(self, message: str) -> None:
        self.sent.append(message)


async def test_recovery_at_start_extends_the_start_timeout_and_finishes_the_journal(
    tmp_path: Path,
) -> None:
    notifier = RecordingNotifier()
    made = Daemon(settings(tmp_path), tmp_path / "c.toml", clock=FakeClock(NOW), notifier=notifier)
    kit = make_kit(made.settings.state.dir, World())
    kit.engine.context.report = made.report

    @asynccontextmanager
    async def engine() -> AsyncIterator[Any]:
        yield kit.engine

    made._engine = engine  # type: ignore[method-assign]
    left = made.journal.begin(
        Kind.UPGRADE, trigger="schedule", from_version="0.1.10", to_version="0.2.0", now=NOW
    )

    await made._recover()

    assert made.journal.get(left.id).state is State.ABORTED
    assert notifier.sent[0].startswith("STATUS=recovering transaction")
    assert notifier.sent[1] == "EXTEND_TIMEOUT_USEC=30000000"
    assert made.running is None
