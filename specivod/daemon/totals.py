"""What the journal and the backups dir say, for metrics and the status API: totals by result and
trigger, upgrade durations, the last upgrade, the last backup.

Rule: read once on start and after each transaction (not per scrape), so totals survive a
restart and a scrape never touches the disk.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from specivod.adapters.backup.backups import backups_in
from specivod.domain.errors import SpecivodError
from specivod.domain.states import State
from specivod.engine.journal import Journal, Kind, Transaction
from specivod.web.webhook import LastUpgrade

log = logging.getLogger(__name__)

HISTORY_LIMIT = 100_000
AUTOMATIC_ROLLBACK = "health_gate"
"""The ``trigger`` label of the rollback an upgrade does itself when its new version fails."""


@dataclass(frozen=True)
class Totals:
    upgrades: dict[str, int] = field(default_factory=dict)
    rollbacks: dict[tuple[str, str], int] = field(default_factory=dict)
    upgrade_durations: tuple[float, ...] = ()
    """Finished upgrades, newest first."""
    last_upgrade_timestamp: float | None = None
    latest: Transaction | None = None
    backup_duration_seconds: float | None = None
    backup_size_bytes: int | None = None
    last_backup_timestamp: float | None = None


def _restore_label(transaction: Transaction) -> str:
    return "true" if transaction.restored else "false"


def read_totals(journal: Journal, backups_dir: Path) -> Totals:
    transactions = journal.history(HISTORY_LIMIT)
    upgrades: Counter[str] = Counter()
    rollbacks: Counter[tuple[str, str]] = Counter()
    durations: list[float] = []
    last_upgrade: float | None = None
    for transaction in transactions:
        if not transaction.state.is_terminal:
            continue
        if transaction.kind is Kind.UPGRADE:
            upgrades[transaction.state.value] += 1
            if transaction.duration_seconds is not None:
                durations.append(transaction.duration_seconds)
            if last_upgrade is None and transaction.finished_at is not None:
                last_upgrade = transaction.finished_at.timestamp()
            if transaction.state in (State.ROLLED_BACK, State.ROLLBACK_FAILED):
                rollbacks[(AUTOMATIC_ROLLBACK, _restore_label(transaction))] += 1
        elif transaction.kind is Kind.ROLLBACK and transaction.state in (
            State.ROLLED_BACK,
            State.ROLLBACK_FAILED,
        ):
            rollbacks[(transaction.trigger, _restore_label(transaction))] += 1
    backup = _last_backup(backups_dir)
    return Totals(
        upgrades=dict(upgrades),
        rollbacks=dict(rollbacks),
        upgrade_durations=tuple(durations),
        last_upgrade_timestamp=last_upgrade,
        latest=transactions[0] if transactions else None,
        backup_duration_seconds=backup[0] if backup else None,
        backup_size_bytes=backup[1] if backup else None,
        last_backup_timestamp=backup[2] if backup else None,
    )


def _last_backup(directory: Path) -> tuple[float, int, float] | None:
    try:
        manifests = [manifest for manifest in backups_in(directory) if manifest.valid]
    except (OSError, SpecivodError) as error:
        log.warning("cannot read the backups in %s: %s", directory, error)
        return None
    if not manifests:
        return None
    newest = manifests[0]
    return newest.durations.total_seconds, newest.size, newest.created_at.timestamp()


def new_version_started_at(journal: Journal, transaction: Transaction) -> datetime:
    """When the upgrade journaled STARTING (the new version's containers came up then)."""
    starts = [step.at for step in journal.steps(transaction.id) if step.state is State.STARTING]
    return starts[-1] if starts else transaction.started_at


def last_upgrade(journal: Journal) -> LastUpgrade | None:
    """The last successful upgrade, as the webhook needs it."""
    upgrade = journal.last_succeeded_upgrade()
    if upgrade is None or upgrade.to_version is None or upgrade.finished_at is None:
        return None
    return LastUpgrade(
        transaction_id=str(upgrade.id),
        version=upgrade.to_version,
        new_version_started_at=new_version_started_at(journal, upgrade),
        finished_at=upgrade.finished_at,
    )
