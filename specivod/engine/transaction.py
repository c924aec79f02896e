"""The transaction in one place: a table from each journaled state to the step that runs in it.

Rule: a step runs in the state the journal names and ends by journaling the next state, before
that state's step acts. Recovery is running the table from the journaled state, so every step must
be safe to run again after a kill. Failures are mapped by where they happen: before the app was
touched, ABORTED; while the new version starts or is verified, the rollback; inside the rollback,
ROLLBACK_FAILED, with nothing deleted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from specivod.domain.errors import SpecivodError
from specivod.domain.states import BEFORE_START, State
from specivod.engine.context import (
    Context,
    failure_reason,
    version_being_installed,
    version_to_restore,
)
from specivod.engine.engine_outage import MAX_RERUNS, came_back
from specivod.engine.journal import Kind, Transaction
from specivod.engine.rollback_steps import (
    check_before_stopping,
    restart_previous,
    restore,
    safety_backup,
    stop_and_decide,
)

Step = Callable[[Context, Transaction], Awaitable[Transaction]]


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
    services = transaction.serving_services
    if services is None:  # journaled by a specivod that did not record it
        return await context.deployment.app_services()
    return services


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


STEPS: dict[State, Step] = {
    State.PLANNED: _planned,
    State.BACKING_UP: _back_up,
    State.PULLING: _pull,
    State.PINNED: _pin,
    State.STARTING: _start,
    State.VERIFYING: _verify,
    State.ROLLING_BACK: check_before_stopping,
    State.STOPPING: stop_and_decide,
    State.SAFETY_BACKUP: safety_backup,
    State.RESTORING: restore,
    State.RESTARTING: restart_previous,
}
"""Every non-terminal state and the step that runs in it."""
