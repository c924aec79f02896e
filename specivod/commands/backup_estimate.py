"""What the next backup will write, as ``check`` and ``status`` show it: read from the data dir's
metadata and the last backup, never failing the command that shows it."""

from __future__ import annotations

import logging
from typing import Any

from specivod.adapters.backup.backups import Backups
from specivod.adapters.compose import ComposeDeployment
from specivod.domain.errors import SpecivodError
from specivod.settings import Settings

log = logging.getLogger(__name__)


async def next_backup(settings: Settings) -> tuple[dict[str, Any] | None, str]:
    """The estimate as JSON (``None`` when it cannot be made) and as one sentence."""
    deployment = ComposeDeployment(
        settings.deployment, database_service=settings.backup.database_service
    )
    try:
        estimate = await Backups(settings.backup, deployment).estimate()
    except (SpecivodError, OSError) as problem:
        log.debug("cannot estimate the next backup: %s", problem)
        return None, f"cannot estimate the next backup: {problem}"
    finally:
        deployment.close()
    return estimate.to_json(), estimate.describe()
