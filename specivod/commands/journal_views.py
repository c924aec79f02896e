"""Transactions from the journal, as JSON objects and as sentences an operator reads."""

from __future__ import annotations

from typing import Any

from specivod.domain.states import State
from specivod.engine.journal import Kind, Step, Transaction

OUTCOME_WORDS = {
    State.SUCCEEDED: "succeeded",
    State.ABORTED: "aborted before the app was touched",
    State.ROLLED_BACK: "failed and was rolled back",
    State.ROLLBACK_FAILED: "ROLLBACK FAILED: the deployment needs a person",
}


def transaction_json(transaction: Transaction, steps: list[Step] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": transaction.id,
        "kind": transaction.kind.value,
        "trigger": transaction.trigger,
        "from": transaction.from_version,
        "to": transaction.to_version,
        "state": transaction.state.value,
        "backup_id": transaction.backup_id,
        "safety_backup_id": transaction.safety_backup_id,
        "restore_mode": transaction.restore_mode.value,
        "schema_changed": (
            None
            if transaction.fingerprint_after is None
            else transaction.fingerprint_after != transaction.fingerprint_before
        ),
        "restored": transaction.restored,
        "data_aside": transaction.data_aside,
        "reason": transaction.reason,
        "started_at": transaction.started_at.isoformat(),
        "updated_at": transaction.updated_at.isoformat(),
        "finished_at": transaction.finished_at.isoformat() if transaction.finished_at else None,
        "duration_seconds": transaction.duration_seconds,
    }
    if steps is not None:
        payload["steps"] = [
            {"state": step.state.value, "at": step.at.isoformat(), "detail": step.detail}
            for step in steps
        ]
    return payload


def transaction_sentence(transaction: Transaction) -> str:
    what = transaction.kind.value
    head = (
        f"#{transaction.id} {what} {transaction.from_version} → {transaction.to_version} "
        f"({transaction.trigger}, started {transaction.started_at:%Y-%m-%d %H:%M:%S %Z})"
    )
    if not transaction.state.is_terminal:
        return f"{head}: in progress, now {transaction.state.name}"
    words = OUTCOME_WORDS[transaction.state]
    if transaction.state is State.ROLLED_BACK and transaction.kind is not Kind.UPGRADE:
        words = "restored" if transaction.kind is Kind.RESTORE else "rolled back"
    duration = transaction.duration_seconds or 0.0
    parts = [f"{head}: {words} after {duration:.0f}s"]
    if transaction.backup_id:
        parts.append(f"backup {transaction.backup_id}")
    if transaction.safety_backup_id:
        parts.append(f"the state it replaced is kept in backup {transaction.safety_backup_id}")
    if transaction.restored:
        parts.append("database and data dir restored from it")
    if transaction.data_aside and transaction.restored:
        parts.append(f"replaced data dir kept at {transaction.data_aside}")
    elif transaction.data_aside:
        parts.append(
            f"a restore was begun: the data dir it replaced, if any, is {transaction.data_aside}"
        )
    if transaction.reason and transaction.state is not State.SUCCEEDED:
        parts.append(f"reason: {transaction.reason}")
    return "; ".join(parts)
