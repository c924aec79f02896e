"""``specivod run``: the daemon. Logs at INFO on stderr (journald keeps them) unless -v asks for
more; exits 0 after SIGTERM, 1 when a root task died (systemd restarts it), 78 on a bad config
(the CLI's loader, before this runs)."""

from __future__ import annotations

import logging
from pathlib import Path

from specivod.daemon.service import Daemon
from specivod.settings import Settings


async def run(settings: Settings, config_path: Path) -> int:
    package = logging.getLogger("specivod")
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    return await Daemon(settings, config_path).run()
