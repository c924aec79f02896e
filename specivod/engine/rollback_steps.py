"""The rollback's steps: check while the app still runs, stop it, read the schema, keep what is
replaced, restore, start the previous version.

Rule: nothing is read or replaced while an app service runs (or is about to run again); every
step is safe to run again after a kill or an engine outage, and each journals the next state
before that state's step acts (see ``transaction``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

from specivod.domain.errors import SpecivodError
from specivod.domain.states import RestoreMode, State
from specivod.engine.context import Context, version_being_replaced, version_to_restore
from specivod.engine.journal import Kind, Transaction

MAX_SAFETY_BACKUPS = 3
"""Safety backups one rollback takes before it stops chasing an app something keeps starting."""


class RollbackFailed(SpecivodError):
    """The previous version could not be brought back."""


async def running_app_services(context: Context) -> list[str]:
    return [
        service
        for service in await context.deployment.app_services()
        if (await context.deployment.service_state(service)).running
    ]


async def stop_app_if_active(context: Context) -> list[str]:
    """Stop the app services when any of them runs or is about to run again (a crash loop's
    back-off, paused): after a kill or an engine outage, dockerd may have started them
    (``restart: always``). The ones found active."""
    services = await context.deployment.app_services()
    active = [
        service for service in services if (await context.deployment.service_state(service)).active
    ]
    if active:
        await context.deployment.stop(services)
    return active


# The rollback: check while the app runs, stop, read the schema, keep what is replaced, restore,
# start the previous version.


async def check_before_stopping(context: Context, transaction: Transaction) -> Transaction:
    """ROLLING_BACK, nothing stopped yet: what the rollback will need is checked while the app
    still runs — the backup (checksums, room to swap the data dir) and the previous version's
    images (pulled only when missing). A manual rollback or a restore replaces a serving version:
    any problem ends ABORTED with the app serving. After a failed upgrade a problem is reported
    and the rollback goes on (an image rollback may still work)."""
    previous = version_to_restore(transaction)
    backup_id = transaction.backup_id
    may_restore = transaction.restore_mode is not RestoreMode.NEVER
    if transaction.kind is not Kind.UPGRADE and transaction.serving is None:
        transaction = context.journal.record(
            transaction, serving=",".join(await running_app_services(context))
        )
    if transaction.kind is Kind.UPGRADE:
        if may_restore and backup_id is not None:
            await _report_problem(context, transaction, context.backups.prepare_restore(backup_id))
        await _report_problem(context, transaction, context.deployment.ensure_images(previous))
        return _enter_stopping(context, transaction)
    if may_restore:
        if backup_id is None:
            raise SpecivodError("no backup is recorded to restore from")
        await context.backups.prepare_restore(backup_id)
    await context.deployment.ensure_images(previous)
    return _enter_stopping(context, transaction)


async def _report_problem(
    context: Context, transaction: Transaction, check: Awaitable[object]
) -> None:
    try:
        await check
    except SpecivodError as problem:
        context.tell(transaction, f"going on with the rollback despite: {problem}")


def _enter_stopping(context: Context, transaction: Transaction) -> Transaction:
    return context.enter(transaction, State.STOPPING, "stopping the app services")


async def stop_and_decide(context: Context, transaction: Transaction) -> Transaction:
    """STOPPING: the app services stop first and every other database session is ended, so a
    migration still running cannot commit after the schema was read; then the schema decides
    between an image rollback and a restore."""
    await context.deployment.stop(await context.deployment.app_services())
    await _end_other_sessions(context, transaction)
    if transaction.restore_mode is RestoreMode.NEVER:
        return context.enter(transaction, State.RESTARTING, "image rollback only (restore never)")
    fingerprint = await _fingerprint(context)
    changed = fingerprint is None or fingerprint != transaction.fingerprint_before
    if not transaction.restore_mode.restores(changed):
        return context.enter(
            transaction,
            State.RESTARTING,
            "the schema is unchanged: image rollback only",
            fingerprint_after=fingerprint,
        )
    why = _why_restore(transaction, fingerprint)
    return context.enter(
        transaction,
        State.SAFETY_BACKUP,
        f"{why}; saving the state being replaced before restoring",
        fingerprint_after=fingerprint,
    )


async def _end_other_sessions(context: Context, transaction: Transaction) -> None:
    """A statement the stopped app left running in the database (its client died with the
    container) is rolled back now, not committed after the schema was read."""
    try:
        ended = await context.backups.end_other_sessions()
    except SpecivodError as error:
        context.tell(transaction, f"going on with the rollback; other database sessions: {error}")
        return
    if ended:
        context.tell(
            transaction, f"ended database sessions left after the stop: {'; '.join(ended)}"
        )


def _why_restore(transaction: Transaction, fingerprint: str | None) -> str:
    if transaction.kind is Kind.RESTORE:
        return f"restoring backup {transaction.backup_id} as asked"
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


async def safety_backup(context: Context, transaction: Transaction) -> Transaction:
    """SAFETY_BACKUP, app stopped: every row written up to the stop is kept before a restore
    replaces it; then the room to swap the data dir is checked again, now that the safety
    backup took its share. If either fails, nothing is restored. The app is stopped again
    first if something started it."""
    await stop_app_if_active(context)
    safety = await _save_replaced_state(context, transaction)
    if transaction.backup_id is not None:
        await context.backups.prepare_restore(transaction.backup_id)
    earlier = transaction.earlier_safety_backup_ids
    if transaction.safety_backup_id is not None and transaction.safety_backup_id != safety:
        earlier.append(transaction.safety_backup_id)
    return _enter_restoring(
        context,
        transaction,
        f"the state being replaced is kept in backup {safety}",
        safety_backup_id=safety,
        earlier_safety_backups=",".join(earlier) or None,
    )


async def _save_replaced_state(context: Context, transaction: Transaction) -> str:
    backup = await context.backups.create(
        version=version_being_replaced(transaction),
        reason=f"state replaced by transaction #{transaction.id} ({transaction.kind.value})",
        protect=context.journal.backups_still_needed(),
        keep_set_aside=context.journal.set_aside_still_needed(),
        safety=True,
    )
    return backup.id


def _restore_plan(context: Context, transaction: Transaction) -> tuple[str, str]:
    """The backup to restore, and where the replaced data dir goes: the journaled destination,
    or a free one named after the transaction."""
    if transaction.backup_id is None:
        raise SpecivodError("no backup is recorded for this transaction; cannot restore")
    aside = transaction.data_aside or str(context.backups.data_aside_path(f"tx{transaction.id}"))
    return transaction.backup_id, aside


def _enter_restoring(
    context: Context, transaction: Transaction, why: str, **facts: str | bool | None
) -> Transaction:
    backup_id, aside = _restore_plan(context, transaction)
    return context.enter(
        transaction,
        State.RESTORING,
        f"{why}; restoring backup {backup_id}, the replaced data dir goes to {aside}",
        data_aside=aside,
        **facts,
    )


async def restore(context: Context, transaction: Transaction) -> Transaction:
    """RESTORING, app stopped. An app found running again (dockerd started it after a kill or an
    outage) may have written since the safety backup: it is stopped, and SAFETY_BACKUP saves
    that state before the restore replaces it — at most ``MAX_SAFETY_BACKUPS`` times."""
    if running := await stop_app_if_active(context):
        taken = sum(
            step.state is State.SAFETY_BACKUP for step in context.journal.steps(transaction.id)
        )
        if taken >= MAX_SAFETY_BACKUPS:
            raise RollbackFailed(
                f"{', '.join(running)} kept being started while the data was being restored"
            )
        return context.enter(
            transaction,
            State.SAFETY_BACKUP,
            f"{', '.join(running)} ran again before the restore (started by the engine); "
            "stopped, saving what it may have written before restoring",
        )
    backup_id, aside = _restore_plan(context, transaction)
    if transaction.data_aside is None:  # journaled by a specivod that chose it later
        transaction = context.journal.record(transaction, data_aside=aside)
    await context.backups.restore(backup_id, verify=True, data_aside=Path(aside))
    return context.enter(
        transaction,
        State.RESTARTING,
        f"database and data dir restored from {backup_id}; the replaced data dir is in {aside}",
        restored=True,
    )


async def restart_previous(context: Context, transaction: Transaction) -> Transaction:
    previous = version_to_restore(transaction)
    context.deployment.pin(previous)
    versioned = set(await context.deployment.versioned_services(previous))
    stopped_others = [
        service for service in await context.deployment.app_services() if service not in versioned
    ]
    await context.deployment.up(previous)
    if stopped_others:  # the versioned ones were just recreated by ``up``
        await context.deployment.start(stopped_others)
    verdict = await context.gate.verify(
        previous, version_being_replaced(transaction), scenario_decides=False
    )
    if not verdict.healthy:
        raise RollbackFailed(f"{previous} did not come back: {verdict.detail}")
    return context.enter(transaction, State.ROLLED_BACK, f"{previous} is healthy: {verdict.detail}")
