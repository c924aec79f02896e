"""Putting the previous version back: image only when the schema is unchanged; otherwise stop
the app, restore the database and the data dir (the replaced one moved aside), then start the old
version. A rollback that cannot get the old version healthy ends in ROLLBACK_FAILED, deleting
nothing."""

from __future__ import annotations

from specivod.domain.errors import SpecivodError
from specivod.domain.states import RestoreMode, State
from specivod.engine.context import Context, failure_reason, version_to_restore
from specivod.engine.journal import Kind, Transaction


async def roll_back(context: Context, transaction: Transaction, reason: str) -> Transaction:
    """From STARTING, VERIFYING or a manual rollback's PLANNED: decide, restore, restart."""
    previous = version_to_restore(transaction)
    transaction = context.enter(
        transaction, State.ROLLING_BACK, f"rolling back to {previous}: {reason}", reason=reason
    )
    try:
        fingerprint = await _fingerprint(context)
        changed = fingerprint is None or fingerprint != transaction.fingerprint_before
        transaction = context.journal.record(transaction, fingerprint_after=fingerprint)
        if transaction.restore_mode.restores(changed):
            return await restore_and_start(
                context, transaction, _why_restore(transaction, fingerprint)
            )
        return await _start_previous(context, transaction, "schema unchanged, image rollback only")
    except Exception as error:
        reason = failure_reason(error, f"in the rollback of transaction {transaction.id}")
        return _failed(context, transaction, reason)


def _why_restore(transaction: Transaction, fingerprint: str | None) -> str:
    if transaction.restore_mode is RestoreMode.ALWAYS:
        return "restore requested"
    if fingerprint is None:
        return "the schema could not be read, restoring to be safe"
    return "the schema changed"


async def _fingerprint(context: Context) -> str | None:
    try:
        return await context.backups.fingerprint()
    except SpecivodError:
        return None


async def restore_and_start(context: Context, transaction: Transaction, why: str) -> Transaction:
    """RESTORING: check the backup, stop the app, restore backup and data dir, start the previous
    version. A restore already journaled as done is not done again."""
    try:
        if transaction.restored:
            return await _start_previous(context, transaction, "database and data dir restored")
        backup_id = transaction.backup_id
        if backup_id is None:
            raise SpecivodError("no backup is recorded for this transaction; cannot restore")
        transaction = context.enter(
            transaction, State.RESTORING, f"{why}: restoring backup {backup_id}"
        )
        await context.backups.prepare_restore(backup_id)
        services = await context.deployment.app_services(context.database_service)
        await context.deployment.stop(services)
        if transaction.kind is Kind.ROLLBACK and transaction.safety_backup_id is None:
            safety = await context.backups.create(
                version=transaction.from_version,
                reason="state replaced by a manual rollback",
                protect=[backup_id],
            )
            transaction = context.journal.record(transaction, safety_backup_id=safety.id)
            context.tell(transaction, f"the state being replaced is kept in backup {safety.id}")
        restored = await context.backups.restore(backup_id, verify=False)
        aside = restored.data_aside
        transaction = context.journal.record(
            transaction, restored=True, data_aside=str(aside) if aside is not None else None
        )
        return await _start_previous(context, transaction, "database and data dir restored")
    except Exception as error:
        reason = failure_reason(error, f"restoring for transaction {transaction.id}")
        return _failed(context, transaction, reason)


async def _start_previous(context: Context, transaction: Transaction, how: str) -> Transaction:
    previous = version_to_restore(transaction)
    context.deployment.pin(previous)
    await context.deployment.up(previous)
    verdict = await context.gate.verify(previous)
    if not verdict.healthy:
        return _failed(context, transaction, f"{previous} did not come back: {verdict.detail}")
    return context.enter(
        transaction, State.ROLLED_BACK, f"{how}; {previous} is healthy: {verdict.detail}"
    )


def _failed(context: Context, transaction: Transaction, reason: str) -> Transaction:
    return context.enter(
        transaction,
        State.ROLLBACK_FAILED,
        f"ROLLBACK FAILED, the deployment needs a person: {reason}",
        reason=reason,
    )
