"""``specivod upgrade``, ``rollback``, ``restore ID`` and ``recover``: one engine transaction
each, its progress on stdout, its outcome as the exit code."""

from __future__ import annotations

import sys

from specivod.adapters.clock import SystemClock
from specivod.adapters.registry import registry_from_settings
from specivod.adapters.registry.release import ReleaseCatalog
from specivod.commands import exit_codes
from specivod.commands.check import inspect
from specivod.commands.journal_views import transaction_sentence
from specivod.commands.output import error, say
from specivod.commands.progress_bars import sink_for
from specivod.commands.runtime import open_engine, print_progress, stop_on_signals
from specivod.domain.errors import BackupError, SpecivodError
from specivod.domain.releases import notes_link, release_line
from specivod.domain.states import RestoreMode, State
from specivod.engine.context import StopFlag
from specivod.engine.journal import Transaction
from specivod.engine.service import (
    NeedsAPerson,
    NothingToDo,
    RecoveredFirst,
    Result,
    UnversionedPin,
)
from specivod.settings import Settings

UPGRADE_EXIT = {
    State.SUCCEEDED: exit_codes.OK,
    State.ABORTED: exit_codes.FAILED,
    State.ROLLED_BACK: exit_codes.FAILED,
    State.ROLLBACK_FAILED: exit_codes.NEEDS_A_PERSON,
}
ROLLBACK_EXIT = {
    **UPGRADE_EXIT,
    State.ROLLED_BACK: exit_codes.OK,
    State.SUCCEEDED: exit_codes.FAILED,
}


def _conclude(result: Result, exits: dict[State, int]) -> int:
    if result.recovered is not None:
        say(f"recovered first: {transaction_sentence(result.recovered)}")
    say(transaction_sentence(result.transaction))
    return exits[result.transaction.state]


def _stopped_after(recovery: RecoveredFirst, command: str) -> int:
    say(f"recovered first: {transaction_sentence(recovery.recovered)}")
    say(f"stopped there; run `specivod {command}` again if it is still wanted")
    return ROLLBACK_EXIT[recovery.recovered.state]


def _holds_configured(settings: Settings) -> bool:
    return bool(settings.policy.min_age) or settings.policy.attention_rule().configured


async def _before(settings: Settings, to: str | None) -> str | int | None:
    """The version to pass to the engine (``to``, or the target with every hold applied; None
    lets the engine plan), or an exit code when everything newer is held. Says first what the
    release says about itself."""
    notes = settings.policy.release_notes
    async with registry_from_settings(settings.registry) as registry:
        if to is not None:
            found = await ReleaseCatalog().lookup(registry, to)
            say(release_line(to, found, notes_link(notes, to)))
            return to
        try:
            report = await inspect(settings, registry, SystemClock())
        except SpecivodError:
            if _holds_configured(settings):
                raise
            return None  # the engine recovers first, then meets the same trouble (or not)
    if report.plan.target is None:
        if report.held and any(v.tag in report.held for v in report.plan.candidates):
            say(f"nothing to upgrade: {report.plan.reason}")
            return exit_codes.OK
        return None
    if report.release_line:
        say(report.release_line)
    return report.plan.target.tag if _holds_configured(settings) else None


async def upgrade(settings: Settings, *, to: str | None, now: bool, force: bool) -> int:
    """Without ``--to``, the policy's target with every hold applied (``policy.min_age`` and
    releases marked for attention): a held release is installed only by ``--to``."""
    chosen = await _before(settings, to)
    if isinstance(chosen, int):
        return chosen
    stop = StopFlag()
    stop_on_signals(stop)
    async with open_engine(settings, print_progress, stop, sink_for(sys.stderr)) as engine:
        try:
            result = await engine.upgrade(to=chosen, force=force, ignore_window=now)
        except NothingToDo as nothing:
            say(f"nothing to upgrade: {nothing}")
            return exit_codes.OK
        except UnversionedPin as problem:
            say(f"cannot upgrade: {problem}")
            return exit_codes.FAILED
        except NeedsAPerson as refusal:
            say(f"refusing to upgrade: {refusal}")
            return exit_codes.NEEDS_A_PERSON
    return _conclude(result, UPGRADE_EXIT)


async def rollback(settings: Settings, *, restore: RestoreMode) -> int:
    stop = StopFlag()
    stop_on_signals(stop)
    async with open_engine(settings, print_progress, stop, sink_for(sys.stderr)) as engine:
        try:
            result = await engine.rollback(restore=restore)
        except RecoveredFirst as recovery:
            return _stopped_after(recovery, "rollback")
        except NothingToDo as nothing:
            say(f"nothing to roll back: {nothing}")
            return _needs_a_person(engine.context.journal.latest_effective()) or exit_codes.FAILED
    return _conclude(result, ROLLBACK_EXIT)


async def restore(settings: Settings, backup_id: str) -> int:
    """Restore a backup as a journaled transaction: the backup's version is pinned, the state it
    replaces is saved first, and a killed restore is finished by ``recover``."""
    stop = StopFlag()
    stop_on_signals(stop)
    async with open_engine(settings, print_progress, stop, sink_for(sys.stderr)) as engine:
        try:
            version = engine.context.backups.version_of(backup_id)
        except BackupError as problem:
            error(f"cannot restore: {problem}")
            return exit_codes.FAILED
        try:
            result = await engine.restore(backup_id, version)
        except RecoveredFirst as recovery:
            return _stopped_after(recovery, f"restore {backup_id}")
    return _conclude(result, ROLLBACK_EXIT)


async def recover(settings: Settings) -> int:
    """Finish a transaction a killed specivod left behind (the daemon does this at start)."""
    async with open_engine(settings, print_progress, progress=sink_for(sys.stderr)) as engine:
        finished = await engine.recover()
        latest = engine.context.journal.latest_effective()
    if finished is None:
        say("nothing to recover: no transaction was left unfinished")
    else:
        say(transaction_sentence(finished))
    return _needs_a_person(latest) or exit_codes.OK


def _needs_a_person(latest: Transaction | None) -> int | None:
    if latest is not None and latest.state is State.ROLLBACK_FAILED:
        say(f"the deployment needs a person: {transaction_sentence(latest)}")
        return exit_codes.NEEDS_A_PERSON
    return None
