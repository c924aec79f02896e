"""``specivod status`` and ``specivod history``: what the journal says, what the latest
upgrade's target release says about itself (one quick registry read; never fails ``status``),
and whether the Docker Engine answers a ping."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from specivod.adapters import compose
from specivod.adapters.registry import registry_from_settings
from specivod.adapters.registry.release import ReleaseCatalog, ReleaseLookup
from specivod.commands import exit_codes
from specivod.commands.backup_estimate import next_backup
from specivod.commands.journal_views import transaction_json, transaction_sentence
from specivod.commands.output import emit_json, say
from specivod.domain.errors import SpecivodError
from specivod.domain.releases import ReleaseUnavailable, notes_link, release_json, release_line
from specivod.domain.states import State
from specivod.engine.controls import Controls, ControlState
from specivod.engine.journal import Journal, Kind, Transaction
from specivod.retrying import RetryPolicy
from specivod.settings import Settings

STATUS_REGISTRY_SECONDS = 10.0


def _pinned(settings: Settings) -> str | None:
    try:
        return compose.deployed_version(settings.deployment)
    except SpecivodError:
        return None


def needs_a_person(latest: Transaction | None, controls: ControlState) -> bool:
    """The last transaction ended in ROLLBACK_FAILED and nobody ran ``specivod resolve``."""
    return (
        latest is not None
        and latest.state is State.ROLLBACK_FAILED
        and latest.id not in controls.resolved
    )


def status_object(
    settings: Settings, journal: Journal, now: datetime, release: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``status --json`` object (the daemon's ``/api/v1/status`` adds its own fields);
    ``release`` is what the latest upgrade's target says about itself (``release_json``)."""
    latest = journal.latest()
    steps = journal.steps(latest.id) if latest else []
    controls = Controls(settings.state.dir).state(now)
    return {
        "deployed": _pinned(settings),
        "state": latest.state.value if latest else None,
        "in_progress": latest is not None and not latest.state.is_terminal,
        "needs_attention": needs_a_person(journal.latest_effective(), controls),
        "step": steps[-1].detail if steps else None,
        "transaction": transaction_json(latest, steps) if latest else None,
        "controls": controls.as_json(),
        "windows_configured": len(settings.window),
        "release": release,
    }


def upgrade_target(latest: Transaction | None) -> str | None:
    """The version the latest transaction moves to, when it is an upgrade."""
    if latest is None or latest.kind is not Kind.UPGRADE:
        return None
    return latest.to_version


async def _lookup(settings: Settings, version: str) -> ReleaseLookup:
    """One quick try: ``status`` reads the journal and must not wait long on a registry."""
    seconds = min(settings.registry.timeout.total_seconds(), STATUS_REGISTRY_SECONDS)
    try:
        async with (
            asyncio.timeout(seconds),
            registry_from_settings(settings.registry, retry=RetryPolicy(attempts=1)) as client,
        ):
            return await ReleaseCatalog().lookup(client, version)
    except TimeoutError:
        return ReleaseUnavailable(version, f"the registry did not answer within {seconds:g}s")
    except SpecivodError as error:  # e.g. unreadable docker credentials: status still answers
        return ReleaseUnavailable(version, str(error))


def release_of(settings: Settings, version: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """(``release_json``, ``release_line``) of ``version``, read from the registry."""
    if version is None:
        return None, None
    found = asyncio.run(_lookup(settings, version))
    notes = notes_link(settings.policy.release_notes, version)
    return release_json(version, found, notes), release_line(version, found, notes)


def status(settings: Settings, as_json: bool) -> int:
    """Exit 4 when the last transaction ended in ROLLBACK_FAILED (not resolved), else 0."""
    with Journal(settings.state.dir) as journal:
        latest = journal.latest()
        steps = journal.steps(latest.id) if latest else []
        release, line = release_of(settings, upgrade_target(latest))
        report = status_object(settings, journal, datetime.now(UTC), release)
    backup, backup_line = asyncio.run(next_backup(settings))
    engine_problem = compose.engine_problem()
    engine = {"reachable": engine_problem is None, "problem": engine_problem}
    if as_json:
        emit_json({**report, "next_backup": backup, "engine": engine})
    else:
        pinned = report["deployed"]
        say(f"deployed: {pinned or 'unknown'} (pinned in {settings.deployment.env_path})")
        if latest is None:
            say("no upgrade has run yet")
        else:
            say(f"last:     {transaction_sentence(latest)}")
            if steps:
                say(f"step:     {steps[-1].state.name}: {steps[-1].detail}")
            if line:
                say(f"release:  {line}")
        say(f"controls: {_controls_sentence(report['controls'])}")
        say(f"backup:   {backup_line}")
        say(
            "engine:   "
            + ("answers" if engine_problem is None else f"unreachable: {engine_problem}")
        )
        if not settings.window:
            say("window:   none configured: the daemon never upgrades unattended")
    return exit_codes.NEEDS_A_PERSON if report["needs_attention"] else exit_codes.OK


def _controls_sentence(controls: dict[str, Any]) -> str:
    parts = []
    if controls["paused"]:
        until = controls["paused_until"]
        parts.append(f"unattended upgrades paused{' until ' + until if until else ''}")
    if controls["skipped"]:
        parts.append("skipped: " + ", ".join(sorted(controls["skipped"])))
    if controls["resolved_transactions"]:
        resolved = ", ".join(f"#{number}" for number in controls["resolved_transactions"])
        parts.append(f"resolved: {resolved}")
    return "; ".join(parts) or "none"


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
