"""The transaction in one place: a table from each journaled state to the step that runs in it.

Rule: a step runs in the state the journal names and ends by journaling the next state, before
that state's step acts. Recovery is running the table from the journaled state, so every step must
be safe to run again after a kill. Failures are mapped by where they happen: before the app was
touched, ABORTED; while the new version starts or is verified, the rollback; inside the rollback,
ROLLBACK_FAILED, with nothing deleted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from specivod.domain.errors import SpecivodError
from specivod.domain.states import BEFORE_START, RestoreMode, State
from specivod.engine.context import (
    Context,
    failure_reason,
    version_being_installed,
    version_being_replaced,
    version_to_restore,
)
from specivod.engine.engine_outage import MAX_RERUNS, came_back
from specivod.engine.journal import Kind, Transaction

Step = Callable[[Context, Transaction], Awaitable[Transaction]]

MAX_SAFETY_BACKUPS = 3
"""Safety backups one rollback takes before it stops chasing an app something keeps starting."""


class RollbackFailed(SpecivodError):
    """The previous version could not be brought back."""


class Stopped(SpecivodError):
    """A signal asked specivod to stop before the running app was touched."""


async def drive(context: Context, transaction: Transaction) -> Transaction:
    """Run steps from the journaled state until the transaction is terminal. A step that
    failed because the Docker Engine went away runs again once it is back (``engine_outage``)."""
    reruns = 0
    while not transaction.state.is_terminal:
        if _app_untouched(transaction) and context.stop.requested:
            return abort(
                context, transaction, f"stopped before the next step: {context.stop.reason}"
            )
        step = STEPS[transaction.state]
        try:
            transaction = await step(context, transaction)
        except Exception as error:
            if reruns < MAX_RERUNS and await came_back(context, transaction):
                reruns += 1
                continue
            transaction = await _after_failure(context, transaction, error)
    return transaction


async def resume(context: Context, transaction: Transaction) -> Transaction:
    """Finish a transaction a killed process left. An upgrade that had not started the new
    version is aborted, not continued: the window it was planned in may be long closed. Killed
    after ``.env`` pinned the target, something (an operator's boot running ``compose up``) may
    have started it since, and it may have migrated the database: then it is rolled back."""
    if transaction.kind is Kind.UPGRADE and transaction.state in BEFORE_START:
        if transaction.state is State.PINNED and await _target_started(context, transaction):
            target = version_being_installed(transaction)
            return await drive(
                context,
                _begin_rollback(
                    context,
                    transaction,
                    f"interrupted in PINNED by a restart, and {target} was started since",
                ),
            )
        return abort(context, transaction, f"interrupted in {transaction.state.name} by a restart")
    return await drive(context, transaction)


async def _target_started(context: Context, transaction: Transaction) -> bool:
    """Whether a versioned service runs (or is about to run) the target's image."""
    target = version_being_installed(transaction)
    try:
        images = await context.deployment.versioned_images(target)
        for service, image in images.items():
            state = await context.deployment.service_state(service)
            if state.active and state.image == image:
                return True
    except SpecivodError as error:
        context.tell(transaction, f"cannot tell whether {target} was started: {error}")
    return False


def _stopped(context: Context) -> str:
    return f"stopped before the next step: {context.stop.reason}"


def _app_untouched(transaction: Transaction) -> bool:
    if transaction.kind is Kind.UPGRADE:
        return transaction.state in BEFORE_START
    return transaction.state in (State.PLANNED, State.ROLLING_BACK)


async def _after_failure(
    context: Context, transaction: Transaction, error: Exception
) -> Transaction:
    state = transaction.state
    reason = failure_reason(error, f"in {state.name} of transaction {transaction.id}")
    if _app_untouched(transaction):
        return abort(context, transaction, reason)
    if state in (State.STARTING, State.VERIFYING):
        target = version_being_installed(transaction)
        doing = "starting" if state is State.STARTING else "verifying"
        return _begin_rollback(context, transaction, f"{doing} {target} failed: {reason}")
    if (
        state is State.SAFETY_BACKUP
        and transaction.kind is not Kind.UPGRADE
        and transaction.safety_backup_id is None  # else a restore already began: never serve
    ):
        return await _serve_again(context, transaction, reason)
    return _rollback_failed(context, transaction, reason)


async def _serve_again(context: Context, transaction: Transaction, reason: str) -> Transaction:
    """A manual rollback or restore that cannot keep what it would replace restores nothing:
    the app services that were serving when it began (``.env`` never changed) start again, and
    only those: after a rollback that failed, nothing was serving, and what ``.env`` pins is the
    release that failed."""
    services = await _were_serving(context, transaction)
    if not services:
        return context.enter(
            transaction,
            State.ABORTED,
            f"aborted, nothing was replaced; no app service was running when it began, so none "
            f"was started: {reason}",
            reason=reason,
        )
    try:
        await context.deployment.start(services)
    except SpecivodError as error:
        return _rollback_failed(
            context, transaction, f"{reason}; then starting the app again failed: {error}"
        )
    return context.enter(
        transaction,
        State.ABORTED,
        f"aborted, nothing was replaced and {', '.join(services)} started again: {reason}",
        reason=reason,
    )


async def _were_serving(context: Context, transaction: Transaction) -> list[str]:
    if transaction.serving is None:  # journaled by a specivod that did not record it
        return await context.deployment.app_services()
    return [service for service in transaction.serving.split(",") if service]


async def _running(context: Context) -> list[str]:
    return [
        service
        for service in await context.deployment.app_services()
        if (await context.deployment.service_state(service)).running
    ]


async def _active(context: Context) -> list[str]:
    """The app services running or about to run again (a crash loop's back-off, paused)."""
    return [
        service
        for service in await context.deployment.app_services()
        if (await context.deployment.service_state(service)).active
    ]


def abort(context: Context, transaction: Transaction, reason: str) -> Transaction:
    """End a transaction that never touched the running app, ``.env`` as it was. When even that
    fails the transaction stays open, and the next start tries the abort again."""
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


def _rollback_failed(context: Context, transaction: Transaction, reason: str) -> Transaction:
    return context.enter(
        transaction,
        State.ROLLBACK_FAILED,
        f"ROLLBACK FAILED, the deployment needs a person; nothing was deleted: {reason}",
        reason=reason,
    )


def _begin_rollback(context: Context, transaction: Transaction, reason: str) -> Transaction:
    previous = version_to_restore(transaction)
    return context.enter(
        transaction, State.ROLLING_BACK, f"rolling back to {previous}: {reason}", reason=reason
    )


# The forward path of an upgrade.


async def _planned(context: Context, transaction: Transaction) -> Transaction:
    if transaction.kind is Kind.UPGRADE:
        return context.enter(
            transaction, State.BACKING_UP, "backing up the database and the data dir"
        )
    return context.enter(
        transaction,
        State.ROLLING_BACK,
        f"checking backup {transaction.backup_id} while {transaction.from_version} still serves",
    )


async def _back_up(context: Context, transaction: Transaction) -> Transaction:
    target = version_being_installed(transaction)
    fingerprint = await context.backups.fingerprint()
    backup = await context.backups.create(
        version=transaction.from_version,
        reason=f"before upgrade to {target}",
        protect=context.journal.backups_still_needed(),
        keep_set_aside=context.journal.set_aside_still_needed(),
    )
    return context.enter(
        transaction,
        State.PULLING,
        f"backup {backup.id} is valid; pulling {target}",
        backup_id=backup.id,
        fingerprint_before=fingerprint,
    )


async def _pull(context: Context, transaction: Transaction) -> Transaction:
    target = version_being_installed(transaction)
    await context.deployment.pull(target)
    return context.enter(transaction, State.PINNED, f"pinning {target} in .env")


async def _pin(context: Context, transaction: Transaction) -> Transaction:
    target = version_being_installed(transaction)
    context.deployment.pin(target)
    if context.stop.requested:  # the last moment to stop without touching the app
        raise Stopped(_stopped(context))
    return context.enter(transaction, State.STARTING, f"docker compose up -d ({target})")


async def _start(context: Context, transaction: Transaction) -> Transaction:
    target = version_being_installed(transaction)
    await context.deployment.up(target)
    return context.enter(transaction, State.VERIFYING, f"waiting for {target} to be healthy")


async def _verify(context: Context, transaction: Transaction) -> Transaction:
    target = version_being_installed(transaction)
    verdict = await context.gate.verify(target, transaction.from_version)
    for _ in range(MAX_RERUNS):
        if verdict.healthy or not await came_back(context, transaction):
            break
        verdict = await context.gate.verify(target, transaction.from_version)
    if verdict.healthy:
        return context.enter(transaction, State.SUCCEEDED, f"{target} is healthy: {verdict.detail}")
    return _begin_rollback(context, transaction, f"{target} {verdict.detail}")


# The rollback: check while the app runs, stop, read the schema, keep what is replaced, restore,
# start the previous version.


async def _check_before_stopping(context: Context, transaction: Transaction) -> Transaction:
    """ROLLING_BACK, nothing stopped yet: what the rollback will need is checked while the app
    still runs — the backup (checksums, room to swap the data dir) and the previous version's
    images (pulled only when missing). A manual rollback or a restore replaces a serving version:
    any problem ends ABORTED with the app serving. After a failed upgrade a problem is reported
    and the rollback goes on (an image rollback may still work)."""
    previous = version_to_restore(transaction)
    backup_id = transaction.backup_id
    may_restore = transaction.restore_mode is not RestoreMode.NEVER
    if transaction.kind is not Kind.UPGRADE and transaction.serving is None:
        transaction = context.journal.record(transaction, serving=",".join(await _running(context)))
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


async def _stop_and_decide(context: Context, transaction: Transaction) -> Transaction:
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


async def _safety_backup(context: Context, transaction: Transaction) -> Transaction:
    """SAFETY_BACKUP, app stopped: every row written up to the stop is kept before a restore
    replaces it; then the room to swap the data dir is checked again, now that the safety
    backup took its share. If either fails, nothing is restored. The app is stopped again
    first: after a kill or an engine outage, dockerd may have started it (``restart: always``)."""
    if await _active(context):
        await context.deployment.stop(await context.deployment.app_services())
    safety = await _save_replaced_state(context, transaction)
    if transaction.backup_id is not None:
        await context.backups.prepare_restore(transaction.backup_id)
    earlier = [b for b in (transaction.earlier_safety_backups or "").split(",") if b]
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


async def _restore(context: Context, transaction: Transaction) -> Transaction:
    """RESTORING, app stopped. An app found running again (dockerd started it after a kill or an
    outage) may have written since the safety backup: it is stopped, and SAFETY_BACKUP saves
    that state before the restore replaces it — at most ``MAX_SAFETY_BACKUPS`` times."""
    if running := await _active(context):
        await context.deployment.stop(await context.deployment.app_services())
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


async def _restart_previous(context: Context, transaction: Transaction) -> Transaction:
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


STEPS: dict[State, Step] = {
    State.PLANNED: _planned,
    State.BACKING_UP: _back_up,
    State.PULLING: _pull,
    State.PINNED: _pin,
    State.STARTING: _start,
    State.VERIFYING: _verify,
    State.ROLLING_BACK: _check_before_stopping,
    State.STOPPING: _stop_and_decide,
    State.SAFETY_BACKUP: _safety_backup,
    State.RESTORING: _restore,
    State.RESTARTING: _restart_previous,
}
"""Every non-terminal state and the step that runs in it."""
