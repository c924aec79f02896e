"""What a backup taken outside an upgrade must respect, for `specivod backup` and the daemon's
scheduled backups alike: no backup while a transaction is unfinished (the deployment may be
between versions), and retention keeps every backup and set-aside tree the journal still names."""

from __future__ import annotations

from specivod.domain.errors import SpecivodError
from specivod.engine.journal import Journal
from specivod.settings import Settings


def refuse_between_versions(settings: Settings) -> None:
    """A transaction a killed specivod left open may have restored the data under a pin that
    does not match it yet: a backup now would carry the wrong version."""
    with Journal(settings.state.dir) as journal:
        unfinished = journal.unfinished()
    if unfinished is not None:
        raise SpecivodError(
            f"transaction {unfinished.id} ({unfinished.kind.value} {unfinished.from_version} → "
            f"{unfinished.to_version}) was left unfinished in {unfinished.state.name}; the "
            "deployment may be between versions. Run `specivod recover` first"
        )


def still_needed(settings: Settings) -> tuple[list[str], list[str]]:
    """The backups and set-aside trees retention must keep."""
    with Journal(settings.state.dir) as journal:
        return journal.backups_still_needed(), journal.set_aside_still_needed()
