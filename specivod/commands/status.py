"""``specivod status`` and ``specivod history``: what the journal says."""

from __future__ import annotations

from specivod.adapters import compose
from specivod.commands import exit_codes
from specivod.commands.journal_views import transaction_json, transaction_sentence
from specivod.commands.output import emit_json, say
from specivod.domain.errors import SpecivodError
from specivod.domain.states import State
from specivod.engine.journal import Journal
from specivod.settings import Settings


def _pinned(settings: Settings) -> str | None:
    try:
        return compose.deployed_version(settings.deployment)
    except SpecivodError:
        return None


def status(settings: Settings, as_json: bool) -> int:
    """Exit 4 when the last transaction ended in ROLLBACK_FAILED, else 0."""
    with Journal(settings.state.dir) as journal:
        latest = journal.latest()
        steps = journal.steps(latest.id) if latest else []
    needs_a_person = latest is not None and latest.state is State.ROLLBACK_FAILED
    pinned = _pinned(settings)
    if as_json:
        emit_json(
            {
                "deployed": pinned,
                "state": latest.state.value if latest else None,
                "in_progress": latest is not None and not latest.state.is_terminal,
                "needs_attention": needs_a_person,
                "step": steps[-1].detail if steps else None,
                "transaction": transaction_json(latest, steps) if latest else None,
            }
        )
    else:
        say(f"deployed: {pinned or 'unknown'} (pinned in {settings.deployment.env_path})")
        if latest is None:
            say("no upgrade has run yet")
        else:
            say(f"last:     {transaction_sentence(latest)}")
            if steps:
                say(f"step:     {steps[-1].state.name}: {steps[-1].detail}")
    return exit_codes.NEEDS_A_PERSON if needs_a_person else exit_codes.OK


def history(settings: Settings, as_json: bool, limit: int) -> int:
    with Journal(settings.state.dir) as journal:
        transactions = journal.history(limit)
    if as_json:
        emit_json({"transactions": [transaction_json(t) for t in transactions]})
    elif not transactions:
        say("no upgrade has run yet")
    else:
        for transaction in transactions:
            say(transaction_sentence(transaction))
    return exit_codes.OK
