"""What every step of a transaction works with, and the one way a step begins: journal first."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from specivod.adapters.clock import Clock
from specivod.domain.errors import SpecivodError
from specivod.domain.states import State
from specivod.engine.journal import Journal, Kind, Transaction
from specivod.engine.ports import Backups, Deployment
from specivod.engine.verification import HealthGate
from specivod.redaction import redact

log = logging.getLogger(__name__)

Reporter = Callable[[Transaction, str], None]


@dataclass
class StopFlag:
    """Set by a signal handler; read at step boundaries."""

    requested: bool = False
    reason: str = ""

    def request(self, reason: str) -> None:
        self.requested = True
        self.reason = reason


def _silent(_transaction: Transaction, _message: str) -> None:
    return None


@dataclass
class Context:
    journal: Journal
    deployment: Deployment
    backups: Backups
    gate: HealthGate
    clock: Clock
    report: Reporter = _silent
    stop: StopFlag = field(default_factory=StopFlag)

    def enter(
        self, transaction: Transaction, state: State, detail: str = "", **facts: str | bool | None
    ) -> Transaction:
        """Journal ``state`` (committed, fsynced) before the step acts, then tell the operator.
        Secrets are masked first: the detail may quote a failed command."""
        detail = redact(detail)
        moved = self.journal.advance(
            transaction, state, now=self.clock.now(), detail=detail, **facts
        )
        log.info("transaction %s: %s %s", moved.id, state.name, detail)
        self.tell(moved, detail)
        return moved

    def tell(self, transaction: Transaction, message: str) -> None:
        """Report to the operator, best effort: a closed terminal must not stop a transaction."""
        try:
            self.report(transaction, message)
        except Exception as error:  # the journal and the log already hold what matters
            log.warning("cannot report progress: %s", error)


def failure_reason(error: Exception, doing: str) -> str:
    """Why a step failed, for the journal. A ``SpecivodError`` says it in words; anything else
    is a bug, logged with its traceback (call this from the ``except`` block)."""
    if isinstance(error, SpecivodError):
        return str(error)
    log.exception("unexpected error %s", doing)
    return f"unexpected error: {error!r}"


def version_to_restore(transaction: Transaction) -> str:
    """The version a rollback returns to: the one an upgrade left, or a rollback's or a
    restore's target."""
    version = (
        transaction.from_version if transaction.kind is Kind.UPGRADE else transaction.to_version
    )
    if version is None:
        raise SpecivodError(f"transaction {transaction.id} records no version to return to")
    return version


def version_being_replaced(transaction: Transaction) -> str | None:
    """The version whose data a restore replaces: the failed release of an upgrade, or the one
    serving when a rollback or restore was asked for."""
    return transaction.to_version if transaction.kind is Kind.UPGRADE else transaction.from_version


def version_being_installed(transaction: Transaction) -> str:
    if transaction.to_version is None:
        raise SpecivodError(f"transaction {transaction.id} records no target version")
    return transaction.to_version
