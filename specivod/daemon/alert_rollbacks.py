"""Alertmanager rollbacks, wired to the engine.

Rule: an alert that matches while the daemon's own upgrade is being verified vetoes that
verification (the health gate fails it and the upgrade's normal rollback follows); any other
accepted alert rolls the last successful upgrade back through ``Engine.rollback`` with trigger
``alertmanager``, unless a newer upgrade has succeeded since the alert was judged. The handled
alert keys are journaled with the rollback, and the alert names go into its ``reason``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from specivod.domain.states import State
from specivod.engine.journal import Journal, Kind, Transaction
from specivod.web.webhook import LastUpgrade, RollbackRequest

log = logging.getLogger(__name__)

VERIFIED_STATES = (State.STARTING, State.VERIFYING)


@dataclass
class Vetoes:
    """Versions whose running verification an alert failed, each with the reason."""

    reasons: dict[str, str] = field(default_factory=dict)

    def __call__(self, version: str) -> str | None:
        return self.reasons.get(version)

    def clear(self) -> None:
        self.reasons.clear()


def in_flight_upgrade(journal: Journal, running: Transaction | None) -> LastUpgrade | None:
    """The daemon's upgrade while its new version starts or is verified, as the webhook judges
    alerts against it (its watch period runs from now)."""
    if running is None or running.kind is not Kind.UPGRADE or running.to_version is None:
        return None
    current = journal.get(running.id)
    if current.state not in VERIFIED_STATES:
        return None
    starts = [step.at for step in journal.steps(current.id) if step.state is State.STARTING]
    started = starts[-1] if starts else current.updated_at
    return LastUpgrade(str(current.id), current.to_version or "", started, started)


def alert_reason(request: RollbackRequest) -> str:
    return f"alertmanager rollback of upgrade #{request.upgrade.transaction_id}: " + ", ".join(
        request.alert_names
    )
