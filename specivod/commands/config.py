"""``specivod config check`` and ``config show``."""

from __future__ import annotations

import json
from pathlib import Path

import tomli_w

from specivod.commands.output import say
from specivod.settings import Settings


def config_check(settings: Settings, source: Path) -> int:
    say(f"{source}: configuration is valid")
    return 0


def config_show(settings: Settings, as_json: bool) -> int:
    """The effective configuration (file and environment merged), secrets masked."""
    effective = settings.masked()
    say(json.dumps(effective, indent=2) if as_json else tomli_w.dumps(effective).rstrip())
    return 0
