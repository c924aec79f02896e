"""``specivod pause [--until TIME]``, ``resume``, ``skip VERSION``, ``unskip VERSION`` and
``resolve``: operator controls, journaled, honoured by a running daemon at its next tick (no HTTP
needed: the daemon re-reads them)."""

from __future__ import annotations

from datetime import UTC, datetime

from specivod.commands import exit_codes
from specivod.commands.output import error, say
from specivod.domain.durations import parse_duration
from specivod.domain.states import State
from specivod.domain.versions import parse_version
from specivod.engine.controls import Action, Controls
from specivod.engine.journal import Journal
from specivod.settings import Settings


def parse_until(text: str, now: datetime) -> datetime:
    """An ISO 8601 time (local time zone when it names none) or a duration from now (``6h``)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return now + parse_duration(text)
        except ValueError:
            raise ValueError(
                f"--until {text!r}: give an ISO 8601 time (2026-12-01T06:00+01:00) or a "
                "duration (6h)"
            ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def pause(settings: Settings, until: str | None, now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    try:
        end = parse_until(until, now) if until else None
    except ValueError as problem:
        error(str(problem))
        return exit_codes.USAGE
    if end is not None and end <= now:
        error(f"--until {until!r} is not in the future")
        return exit_codes.USAGE
    Controls(settings.state.dir).record(Action.PAUSE, now, until=end)
    say("unattended upgrades paused" + (f" until {end.isoformat()}" if end else ""))
    return exit_codes.OK


def resume(settings: Settings, now: datetime | None = None) -> int:
    Controls(settings.state.dir).record(Action.RESUME, now or datetime.now(UTC))
    say("unattended upgrades resumed")
    return exit_codes.OK


def skip(settings: Settings, version: str, *, undo: bool, now: datetime | None = None) -> int:
    if parse_version(version) is None:
        error(f"{version!r} is not a semver version")
        return exit_codes.USAGE
    action = Action.UNSKIP if undo else Action.SKIP
    Controls(settings.state.dir).record(action, now or datetime.now(UTC), version=version)
    if undo:
        say(f"{version} may be a target again")
    else:
        say(f"{version} is skipped: no unattended or policy upgrade picks it (upgrade --to can)")
    return exit_codes.OK


def resolve(settings: Settings, now: datetime | None = None) -> int:
    """Acknowledge the latest ROLLBACK_FAILED after a person repaired the deployment."""
    with Journal(settings.state.dir) as journal:
        latest = journal.latest_effective()
    if latest is None or latest.state is not State.ROLLBACK_FAILED:
        error("nothing to resolve: the last transaction did not end in ROLLBACK_FAILED")
        return exit_codes.FAILED
    Controls(settings.state.dir).record(
        Action.RESOLVE, now or datetime.now(UTC), transaction_id=latest.id
    )
    say(f"transaction {latest.id} (ROLLBACK_FAILED) resolved; upgrades are allowed again")
    return exit_codes.OK
