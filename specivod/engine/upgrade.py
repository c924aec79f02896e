"""The forward path of an upgrade: back up → pull → pin → up → verify.

Before STARTING any failure aborts: ``.env`` is put back and the running app was never touched.
From STARTING on, a failure hands over to the rollback.
"""

from __future__ import annotations

from specivod.domain.errors import SpecivodError
from specivod.domain.states import State
from specivod.engine.context import Context, failure_reason, version_being_installed
from specivod.engine.journal import Transaction
from specivod.engine.rollback import roll_back


async def run_upgrade(context: Context, transaction: Transaction) -> Transaction:
    """Drive a PLANNED upgrade to a terminal state."""
    target = version_being_installed(transaction)
    try:
        context.boundary()
        transaction = context.enter(
            transaction, State.BACKING_UP, "backing up the database and the data dir"
        )
        fingerprint = await context.backups.fingerprint()
        backup = await context.backups.create(
            version=transaction.from_version,
            reason=f"before upgrade to {target}",
            protect=context.journal.backups_still_needed(),
        )
        transaction = context.journal.record(
            transaction, backup_id=backup.id, fingerprint_before=fingerprint
        )
        context.boundary()
        transaction = context.enter(
            transaction, State.PULLING, f"backup {backup.id} is valid; pulling {target}"
        )
        await context.deployment.pull(target)
        context.boundary()
        transaction = context.enter(transaction, State.PINNED, f"pinning {target} in .env")
        context.deployment.pin(target)
        context.boundary()
    except Exception as error:
        reason = failure_reason(error, f"before {target} was started")
        return abort(context, transaction, reason)
    return await start_and_verify(context, transaction)


def abort(context: Context, transaction: Transaction, reason: str) -> Transaction:
    """End an upgrade that never started the new version: ``.env`` back as it was. When even
    that fails the transaction stays open, and the next start tries the abort again."""
    if transaction.state is State.PINNED and transaction.from_version is not None:
        try:
            context.deployment.pin(transaction.from_version)
        except SpecivodError as error:
            raise SpecivodError(
                f"{reason}; then putting {transaction.from_version} back in .env failed: {error}. "
                f"The running app was not touched; transaction {transaction.id} stays open and "
                "is finished at the next start"
            ) from None
    return context.enter(
        transaction,
        State.ABORTED,
        f"aborted, the running app was not touched: {reason}",
        reason=reason,
    )


async def start_and_verify(context: Context, transaction: Transaction) -> Transaction:
    target = version_being_installed(transaction)
    transaction = context.enter(transaction, State.STARTING, f"docker compose up -d ({target})")
    try:
        await context.deployment.up(target)
    except Exception as error:
        reason = failure_reason(error, f"starting {target}")
        return await roll_back(context, transaction, f"starting {target} failed: {reason}")
    return await verify(context, transaction)


async def verify(context: Context, transaction: Transaction) -> Transaction:
    target = version_being_installed(transaction)
    transaction = context.enter(transaction, State.VERIFYING, f"waiting for {target} to be healthy")
    try:
        verdict = await context.gate.verify(target)
    except Exception as error:
        reason = failure_reason(error, f"verifying {target}")
        return await roll_back(context, transaction, f"verifying {target} failed: {reason}")
    if verdict.healthy:
        return context.enter(transaction, State.SUCCEEDED, f"{target} is healthy: {verdict.detail}")
    return await roll_back(context, transaction, f"{target} {verdict.detail}")
