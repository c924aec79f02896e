"""The Alertmanager webhook: its version 4 payload, and which of its alerts roll an upgrade back.

Rule: a firing alert triggers a rollback when it matches every configured matcher, arrives within
``watch_period`` after the last successful upgrade finished, and started firing after that
upgrade's new version was started (an alert that was already firing is not the new version's
fault). Alertmanager delivers at least once and repeats every ``repeat_interval``, so each alert
(fingerprint, start time) counts once, and an upgrade is rolled back by alerts at most once.
Everything else is acknowledged and ignored. ``decide`` is pure; the caller records the outcome.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from specivod.domain.alerts import AlertKey, Matcher, matches_all

_T = TypeVar("_T")


class Outcome(StrEnum):
    """Every answer the webhook gives, as counted in ``specivod_alertmanager_webhooks_total``."""

    ACCEPTED = "accepted"
    IGNORED = "ignored"
    DUPLICATE = "duplicate"
    UNAUTHORIZED = "unauthorized"
    DISABLED = "disabled"
    BAD_REQUEST = "bad_request"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    TOO_LARGE = "too_large"
    ERROR = "error"


def new_webhook_counts() -> Counter[str]:
    """One counter per outcome, all present from the start so that ``increase()`` works."""
    return Counter({outcome.value: 0 for outcome in Outcome})


class _Model(BaseModel):
    # Alertmanager adds fields over time (truncatedAlerts came in 0.22); unknown ones are kept.
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


class WebhookAlert(_Model):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: AwareDatetime = Field(alias="startsAt")
    ends_at: AwareDatetime | None = Field(None, alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: str = ""

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def key(self) -> AlertKey:
        """Alertmanager's fingerprint is a hash of the labels; older releases did not send it."""
        fingerprint = (
            self.fingerprint
            or hashlib.sha256(
                "\0".join(f"{k}\0{v}" for k, v in sorted(self.labels.items())).encode()
            ).hexdigest()[:16]
        )
        return AlertKey(fingerprint, self.starts_at)


class WebhookPayload(_Model):
    version: Literal["4"]
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(0, alias="truncatedAlerts", ge=0)
    status: Literal["firing", "resolved"]
    receiver: str
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL")
    alerts: list[WebhookAlert]


@dataclass(frozen=True)
class LastUpgrade:
    """The last successful upgrade: the one an alert may roll back."""

    transaction_id: str
    version: str
    new_version_started_at: datetime
    finished_at: datetime


@dataclass(frozen=True)
class RollbackRequest:
    """What the daemon is asked to do: roll ``upgrade`` back because of these alerts."""

    upgrade: LastUpgrade
    alert_names: tuple[str, ...]
    keys: tuple[AlertKey, ...]
    group_key: str


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    request: RollbackRequest | None = None


class SeenAlerts:
    """A bounded memory of alerts that already triggered a rollback, and of upgrades already rolled
    back by alerts. Oldest entries are forgotten first; the caller may persist ``keys`` and give
    them back on start."""

    def __init__(
        self,
        keys: Iterable[AlertKey] = (),
        upgrades: Iterable[str] = (),
        *,
        capacity: int = 1024,
    ) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[AlertKey, None] = OrderedDict()
        self._upgrades: OrderedDict[str, None] = OrderedDict()
        for key in keys:
            self._remember(self._keys, key)
        for upgrade in upgrades:
            self._remember(self._upgrades, upgrade)

    def _remember(self, memory: OrderedDict[_T, None], item: _T) -> None:
        memory[item] = None
        memory.move_to_end(item)
        while len(memory) > self._capacity:
            memory.popitem(last=False)

    def record(self, request: RollbackRequest) -> None:
        for key in request.keys:
            self._remember(self._keys, key)
        self._remember(self._upgrades, request.upgrade.transaction_id)

    def forget(self, request: RollbackRequest) -> None:
        """Undo ``record`` when the rollback could not even be started."""
        for key in request.keys:
            self._keys.pop(key, None)
        self._upgrades.pop(request.upgrade.transaction_id, None)

    def seen(self, key: AlertKey) -> bool:
        return key in self._keys

    def rolled_back(self, transaction_id: str) -> bool:
        return transaction_id in self._upgrades

    @property
    def keys(self) -> tuple[AlertKey, ...]:
        return tuple(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def decide(
    payload: WebhookPayload,
    *,
    matchers: Sequence[Matcher],
    watch_period: timedelta,
    last_upgrade: LastUpgrade | None,
    now: datetime,
    seen: SeenAlerts,
) -> Decision:
    """Which firing alerts of one delivery roll the last upgrade back, if any."""
    if not matchers:
        return Decision(Outcome.IGNORED, "no alertmanager.matchers configured")
    firing = [alert for alert in payload.alerts if alert.status == "firing"]
    if not firing:
        return Decision(Outcome.IGNORED, "no firing alert")
    matching = [alert for alert in firing if matches_all(matchers, alert.labels)]
    if not matching:
        return Decision(Outcome.IGNORED, "no firing alert matches alertmanager.matchers")
    if last_upgrade is None:
        return Decision(Outcome.IGNORED, "no successful upgrade to roll back")
    if not last_upgrade.finished_at <= now <= last_upgrade.finished_at + watch_period:
        return Decision(Outcome.IGNORED, f"outside the watch period after {last_upgrade.version}")
    caused = [a for a in matching if a.starts_at > last_upgrade.new_version_started_at]
    if not caused:
        return Decision(
            Outcome.IGNORED,
            f"the matching alerts were firing before {last_upgrade.version} started",
        )
    if seen.rolled_back(last_upgrade.transaction_id):
        return Decision(Outcome.DUPLICATE, f"a rollback of {last_upgrade.version} was requested")
    new = [alert for alert in caused if not seen.seen(alert.key)]
    if not new:
        return Decision(Outcome.DUPLICATE, "these alerts already triggered a rollback")
    names = tuple(sorted({alert.name for alert in new}))
    request = RollbackRequest(
        upgrade=last_upgrade,
        alert_names=names,
        keys=tuple(alert.key for alert in new),
        group_key=payload.group_key,
    )
    return Decision(
        Outcome.ACCEPTED, f"rolling back {last_upgrade.version}: {', '.join(names)}", request
    )
