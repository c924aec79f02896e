"""``specivod upgrade`` and ``specivod rollback``."""

from __future__ import annotations

from specivod.commands import exit_codes
from specivod.commands.journal_views import transaction_sentence
from specivod.commands.output import say
from specivod.commands.runtime import open_engine, print_progress, stop_on_signals
from specivod.domain.states import RestoreMode, State
from specivod.engine.context import StopFlag
from specivod.engine.service import NeedsAPerson, NothingToDo, Result
from specivod.settings import Settings

UPGRADE_EXIT = {
    State.SUCCEEDED: exit_codes.OK,
    State.ABORTED: exit_codes.FAILED,
    State.ROLLED_BACK: exit_codes.FAILED,
    State.ROLLBACK_FAILED: exit_codes.NEEDS_A_PERSON,
}
ROLLBACK_EXIT = {**UPGRADE_EXIT, State.ROLLED_BACK: exit_codes.OK}


def _conclude(result: Result, exits: dict[State, int]) -> int:
    if result.recovered is not None:
        say(f"recovered first: {transaction_sentence(result.recovered)}")
    say(transaction_sentence(result.transaction))
    return exits[result.transaction.state]


async def upgrade(settings: Settings, *, to: str | None, now: bool, force: bool) -> int:
    stop = StopFlag()
    stop_on_signals(stop)
    async with open_engine(settings, print_progress, stop) as engine:
        try:
            result = await engine.upgrade(to=to, force=force, ignore_window=now)
        except NothingToDo as nothing:
            say(f"nothing to upgrade: {nothing}")
            return exit_codes.OK
        except NeedsAPerson as refusal:
            say(f"refusing to upgrade: {refusal}")
            return exit_codes.NEEDS_A_PERSON
    return _conclude(result, UPGRADE_EXIT)


async def rollback(settings: Settings, *, restore: RestoreMode) -> int:
    stop = StopFlag()
    stop_on_signals(stop)
    async with open_engine(settings, print_progress, stop) as engine:
        try:
            result = await engine.rollback(restore=restore)
        except NothingToDo as nothing:
            say(f"nothing to roll back: {nothing}")
            latest = engine.context.journal.latest()
            if latest is not None and latest.state is State.ROLLBACK_FAILED:
                say(f"the deployment needs a person: {transaction_sentence(latest)}")
                return exit_codes.NEEDS_A_PERSON
            return exit_codes.FAILED
    return _conclude(result, ROLLBACK_EXIT)


async def recover(settings: Settings) -> int:
    """Finish a transaction a killed specivod left behind (the daemon does this at start)."""
    async with open_engine(settings, print_progress) as engine:
        finished = await engine.recover()
        latest = engine.context.journal.latest()
    if finished is None:
        say("nothing to recover: no transaction was left unfinished")
    else:
        say(transaction_sentence(finished))
    if latest is not None and latest.state is State.ROLLBACK_FAILED:
        say(f"the deployment needs a person: {transaction_sentence(latest)}")
        return exit_codes.NEEDS_A_PERSON
    return exit_codes.OK
