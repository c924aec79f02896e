"""The Alertmanager payload model and the rollback decision, with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from specivod.domain.alerts import AlertKey, parse_matcher_lines
from specivod.web.webhook import (
    Decision,
    LastUpgrade,
    Outcome,
    SeenAlerts,
    WebhookPayload,
    decide,
    new_webhook_counts,
)
from tests.support import alertmanager

UPGRADE_STARTED = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
UPGRADE = LastUpgrade(
    transaction_id="7",
    version="0.1.11",
    new_version_started_at=UPGRADE_STARTED,
    finished_at=UPGRADE_STARTED + timedelta(minutes=2),
)
NOW = UPGRADE.finished_at + timedelta(minutes=10)
WATCH = timedelta(hours=2)
MATCHERS = parse_matcher_lines(['alertname="SpecivoDown"', 'severity=~"critical|page"'])


def alert(
    *,
    status: str = "firing",
    name: str = "SpecivoDown",
    severity: str = "page",
    starts_at: datetime = UPGRADE.finished_at + timedelta(minutes=1),
    fingerprint: str = "f1",
) -> dict[str, Any]:
    labels = {"alertname": name, "severity": severity, "instance": "api:8080"}
    return alertmanager.alert(
        started=starts_at, fingerprint=fingerprint, status=status, labels=labels
    )


def payload(*alerts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return alertmanager.delivery(*alerts, **{"commonLabels": {"alertname": "SpecivoDown"}, **extra})


def run(
    body: dict[str, Any],
    *,
    seen: SeenAlerts | None = None,
    now: datetime = NOW,
    last: LastUpgrade | None = UPGRADE,
) -> Decision:
    return decide(
        WebhookPayload.model_validate(body),
        matchers=MATCHERS,
        watch_period=WATCH,
        last_upgrade=last,
        now=now,
        seen=seen if seen is not None else SeenAlerts(),
    )


def test_parses_a_real_alertmanager_payload_with_extra_fields() -> None:
    parsed = WebhookPayload.model_validate(payload(alert(), newField={"x": 1}))
    assert parsed.group_key == '{}:{alertname="SpecivoDown"}'
    assert parsed.alerts[0].key == AlertKey("f1", UPGRADE.finished_at + timedelta(minutes=1))
    assert parsed.alerts[0].ends_at == datetime(1, 1, 1, tzinfo=UTC)
    assert parsed.model_extra == {"newField": {"x": 1}}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"version": "3"}, "version"),
        ({"alerts": "nope"}, "alerts"),
        ({"status": "exploded"}, "status"),
        ({"alerts": [{**alert(), "startsAt": "yesterday"}]}, "alerts.0.startsAt"),
        ({"alerts": [{**alert(), "startsAt": "2026-11-26T10:00:00"}]}, "alerts.0.startsAt"),
        ({"alerts": [{**alert(), "labels": {"a": 1}}]}, "alerts.0.labels.a"),
    ],
)
def test_a_wrong_schema_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        WebhookPayload.model_validate(payload(alert(), **change))
    locations = [".".join(str(part) for part in error["loc"]) for error in raised.value.errors()]
    assert field in locations


def test_a_matching_alert_after_the_upgrade_rolls_back() -> None:
    decision = run(payload(alert()))
    assert decision.outcome is Outcome.ACCEPTED
    assert decision.request is not None
    assert decision.request.alert_names == ("SpecivoDown",)
    assert decision.request.upgrade == UPGRADE
    assert decision.request.keys == (AlertKey("f1", UPGRADE.finished_at + timedelta(minutes=1)),)


def test_an_alert_that_started_during_verification_counts() -> None:
    during = UPGRADE_STARTED + timedelta(seconds=30)
    assert run(payload(alert(starts_at=during))).outcome is Outcome.ACCEPTED


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (payload(alert(status="resolved")), "no firing alert"),
        (payload(), "no firing alert"),
        (payload(alert(name="DiskFull")), "matches"),
        (payload(alert(severity="info")), "matches"),
        (payload(alert(starts_at=UPGRADE_STARTED)), "firing before"),
        (payload(alert(starts_at=UPGRADE_STARTED - timedelta(days=1))), "firing before"),
    ],
)
def test_ignored_alerts(body: dict[str, Any], reason: str) -> None:
    decision = run(body)
    assert decision.outcome is Outcome.IGNORED
    assert reason in decision.reason
    assert decision.request is None


def test_outside_the_watch_period_is_ignored() -> None:
    just_inside = UPGRADE.finished_at + WATCH
    assert run(payload(alert()), now=just_inside).outcome is Outcome.ACCEPTED
    late = run(payload(alert()), now=just_inside + timedelta(seconds=1))
    assert (late.outcome, late.reason) == (Outcome.IGNORED, "outside the watch period after 0.1.11")
    early = run(payload(alert()), now=UPGRADE.finished_at - timedelta(seconds=1))
    assert early.outcome is Outcome.IGNORED


def test_nothing_to_roll_back_without_a_successful_upgrade() -> None:
    assert run(payload(alert()), last=None).outcome is Outcome.IGNORED


def test_no_matchers_configured_means_no_rollback_from_alerts() -> None:
    decision = decide(
        WebhookPayload.model_validate(payload(alert())),
        matchers=(),
        watch_period=WATCH,
        last_upgrade=UPGRADE,
        now=NOW,
        seen=SeenAlerts(),
    )
    assert decision.outcome is Outcome.IGNORED


def test_a_repeated_delivery_rolls_back_once() -> None:
    seen = SeenAlerts()
    outcomes = []
    for _ in range(20):
        decision = run(payload(alert()), seen=seen)
        if decision.request is not None:
            seen.record(decision.request)
        outcomes.append(decision.outcome)
    assert outcomes == [Outcome.ACCEPTED] + [Outcome.DUPLICATE] * 19


def test_a_second_alert_does_not_roll_the_same_upgrade_back_twice() -> None:
    seen = SeenAlerts()
    first = run(payload(alert(fingerprint="f1")), seen=seen)
    assert first.request is not None
    seen.record(first.request)
    assert run(payload(alert(fingerprint="f2")), seen=seen).outcome is Outcome.DUPLICATE


def test_a_seen_alert_does_not_roll_back_the_next_upgrade() -> None:
    seen = SeenAlerts()
    first = run(payload(alert()), seen=seen)
    assert first.request is not None
    seen.record(first.request)
    next_upgrade = LastUpgrade("8", "0.1.12", UPGRADE_STARTED, UPGRADE.finished_at)
    again = run(payload(alert()), seen=seen, last=next_upgrade)
    assert again.outcome is Outcome.DUPLICATE
    assert "already triggered" in again.reason


def test_persisted_keys_survive_a_restart() -> None:
    seen = SeenAlerts()
    first = run(payload(alert()), seen=seen)
    assert first.request is not None
    seen.record(first.request)
    restarted = SeenAlerts(seen.keys)
    other_upgrade = LastUpgrade("8", "0.1.12", UPGRADE_STARTED, UPGRADE.finished_at)
    assert run(payload(alert()), seen=restarted, last=other_upgrade).outcome is Outcome.DUPLICATE


def test_only_new_alerts_of_a_delivery_are_named() -> None:
    seen = SeenAlerts([AlertKey("f1", UPGRADE.finished_at + timedelta(minutes=1))])
    decision = run(payload(alert(fingerprint="f1"), alert(fingerprint="f2")), seen=seen)
    assert decision.request is not None
    assert [key.fingerprint for key in decision.request.keys] == ["f2"]


def test_the_memory_is_bounded_and_forgets_the_oldest_first() -> None:
    start = UPGRADE.finished_at
    keys = [AlertKey(f"f{n}", start) for n in range(5)]
    seen = SeenAlerts(keys, capacity=3)
    assert len(seen) == 3
    assert not seen.seen(keys[0])
    assert not seen.seen(keys[1])
    assert all(seen.seen(key) for key in keys[2:])


def test_an_alert_without_fingerprint_is_keyed_by_its_labels() -> None:
    without = {**alert(), "fingerprint": ""}
    first = WebhookPayload.model_validate(payload(without)).alerts[0].key
    again = WebhookPayload.model_validate(payload(without)).alerts[0].key
    other = WebhookPayload.model_validate(payload({**without, "labels": {"a": "b"}})).alerts[0].key
    assert first == again
    assert first != other


def test_every_outcome_has_a_counter_from_the_start() -> None:
    counts = new_webhook_counts()
    assert set(counts) == {outcome.value for outcome in Outcome}
    assert sum(counts.values()) == 0
