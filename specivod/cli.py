"""The ``specivod`` command: parse arguments, load settings, dispatch, map errors to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from specivod import __version__
from specivod.commands import exit_codes
from specivod.commands.busy import EXCLUSIVE_COMMANDS, refuse_when_busy
from specivod.commands.output import error
from specivod.config_loader import load_settings
from specivod.domain.errors import ConfigError, LockedError, SpecivodError
from specivod.domain.states import RestoreMode
from specivod.redaction import RedactingFilter
from specivod.settings import DEFAULT_CONFIG, Settings

Handler = Callable[[Settings, argparse.Namespace], Awaitable[int] | int]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specivod",
        description="Keeps a Specivo deployment up to date and rolls a bad upgrade back.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ.get("SPECIVOD_CONFIG", DEFAULT_CONFIG)),
        help=f"config file (default: $SPECIVOD_CONFIG or {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging on stderr (-v, -vv)"
    )
    parser.add_argument("--version", action="version", version=f"specivod {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="deployed version, allowed versions, next target")
    check.add_argument("--json", action="store_true", help="one JSON object on stdout")
    check.set_defaults(handler=_check)

    upgrade = commands.add_parser("upgrade", help="one upgrade, rolled back if it fails")
    upgrade.add_argument("--to", metavar="VERSION", help="this version instead of the policy's")
    upgrade.add_argument("--now", action="store_true", help="ignore the maintenance window")
    upgrade.add_argument(
        "--force", action="store_true", help="allow --to outside the range or step"
    )
    upgrade.set_defaults(handler=_upgrade)

    rollback = commands.add_parser("rollback", help="back to the version before the last upgrade")
    rollback.add_argument(
        "--restore",
        choices=[mode.value for mode in RestoreMode],
        default=RestoreMode.AUTO.value,
        help="restore database and data dir: auto (when the schema changed), always, never",
    )
    rollback.set_defaults(handler=_rollback)

    recover = commands.add_parser(
        "recover", help="finish a transaction a killed specivod left behind"
    )
    recover.set_defaults(handler=_recover)

    status = commands.add_parser("status", help="the current or last upgrade, from the journal")
    status.add_argument("--json", action="store_true", help="one JSON object on stdout")
    status.set_defaults(handler=_status)

    history = commands.add_parser("history", help="past upgrades and rollbacks")
    history.add_argument("--json", action="store_true", help="one JSON object on stdout")
    history.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    history.set_defaults(handler=_history)

    backup = commands.add_parser("backup", help="back up the database and the data dir now")
    backup.set_defaults(handler=_backup)
    backups = commands.add_parser("backups", help="list backups")
    backups.add_argument("--json", action="store_true", help="one JSON object on stdout")
    backups.set_defaults(handler=_backups)
    restore = commands.add_parser("restore", help="restore a backup (database and data dir)")
    restore.add_argument("backup_id", metavar="ID", help="a backup id from `specivod backups`")
    restore.set_defaults(handler=_restore)

    run = commands.add_parser("run", help="the daemon: unattended upgrades, metrics, webhook")
    run.set_defaults(handler=_run_daemon)

    _add_control_commands(commands)
    _add_init_command(commands)

    config = commands.add_parser("config", help="validate or print the configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    config_commands.add_parser("check", help="validate the configuration").set_defaults(
        handler=_config_check
    )
    show = config_commands.add_parser("show", help="effective configuration, secrets masked")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_config_show)
    return parser


def _add_control_commands(commands: Any) -> None:
    pause = commands.add_parser("pause", help="pause unattended upgrades")
    pause.add_argument("--until", metavar="TIME", help="ISO 8601 time or a duration like 6h")
    pause.set_defaults(handler=_pause)
    commands.add_parser("resume", help="resume unattended upgrades").set_defaults(handler=_resume)
    skip = commands.add_parser("skip", help="never pick VERSION as the policy's target")
    skip.add_argument("version", metavar="VERSION")
    skip.set_defaults(handler=_skip, undo=False)
    unskip = commands.add_parser("unskip", help="undo skip VERSION")
    unskip.add_argument("version", metavar="VERSION")
    unskip.set_defaults(handler=_skip, undo=True)
    commands.add_parser(
        "resolve", help="acknowledge a ROLLBACK_FAILED after repairing the deployment"
    ).set_defaults(handler=_resolve)


def _add_init_command(commands: Any) -> None:
    init = commands.add_parser(
        "init", help="write a first --config for a compose project (never overwrites)"
    )
    init.add_argument("project_dir", type=Path, metavar="PROJECT_DIR", help="the compose project")
    init.add_argument(
        "-f", "--file", dest="files", action="append", default=[], help="compose file (repeat)"
    )
    init.add_argument("-p", "--project-name", help="compose project name")
    init.add_argument("--env-file", type=Path, default=Path(".env"), help="default: .env")
    init.add_argument("--version-variable", help="when several variables are image tags")
    init.add_argument("--stdout", action="store_true", help="print instead of writing --config")
    init.set_defaults(handler=None)


async def _init(arguments: argparse.Namespace) -> int:
    from specivod.commands.init import InitOptions, init

    options = InitOptions(
        project_dir=arguments.project_dir,
        output=None if arguments.stdout else arguments.config,
        files=arguments.files,
        project_name=arguments.project_name,
        env_file=arguments.env_file,
        version_variable=arguments.version_variable,
    )
    return await init(options)


async def _check(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.adapters.clock import SystemClock
    from specivod.adapters.registry import registry_from_settings
    from specivod.commands.check import check

    async with registry_from_settings(settings.registry) as registry:
        return await check(settings, registry, SystemClock(), arguments.json)


async def _upgrade(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.commands.upgrade import upgrade

    return await upgrade(settings, to=arguments.to, now=arguments.now, force=arguments.force)


async def _rollback(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.commands.upgrade import rollback

    return await rollback(settings, restore=RestoreMode(arguments.restore))


async def _recover(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.commands.upgrade import recover

    return await recover(settings)


def _status(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.commands.status import status

    return status(settings, arguments.json)


def _history(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.commands.status import history

    return history(settings, arguments.json, arguments.limit)


async def _backup(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.commands.backups import backup

    return await backup(settings)


def _backups(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.commands.backups import list_backups

    return list_backups(settings, arguments.json)


async def _restore(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.commands.upgrade import restore

    return await restore(settings, arguments.backup_id)


async def _run_daemon(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.commands.run import run

    return await run(settings, arguments.config)


def _pause(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.commands.controls import pause

    return pause(settings, arguments.until)


def _resume(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.commands.controls import resume

    return resume(settings)


def _skip(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.commands.controls import skip

    return skip(settings, arguments.version, undo=arguments.undo)


def _resolve(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.commands.controls import resolve

    return resolve(settings)


def _config_check(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.commands.config import config_check

    return config_check(settings, arguments.config)


def _config_show(settings: Settings, arguments: argparse.Namespace) -> int:
    from specivod.commands.config import config_show

    return config_show(settings, arguments.json)


def _run(handler: Handler, settings: Settings, arguments: argparse.Namespace) -> int:
    result = handler(settings, arguments)
    if isinstance(result, int):
        return result

    async def wait() -> int:
        return await result

    return asyncio.run(wait())


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(arguments.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    if arguments.command == "init":  # writes the configuration: there is none to load yet
        return _guarded(lambda: asyncio.run(_init(arguments)))
    try:
        settings = load_settings(arguments.config)
    except ConfigError as problem:
        error(f"configuration error:\n{problem}")
        return exit_codes.CONFIG
    return _guarded(lambda: _dispatch(settings, arguments))


def _dispatch(settings: Settings, arguments: argparse.Namespace) -> int:
    if arguments.command in EXCLUSIVE_COMMANDS:
        refuse_when_busy(settings.state.dir, arguments.command)
    return _run(arguments.handler, settings, arguments)


def _guarded(call: Callable[[], int]) -> int:
    """``call``'s exit code, or the one its error maps to."""
    try:
        return call()
    except LockedError as problem:
        error(f"busy: {problem}")
        return exit_codes.FAILED
    except SpecivodError as problem:
        error(str(problem))
        return exit_codes.FAILED
    except KeyboardInterrupt:
        error("interrupted")
        return 130
