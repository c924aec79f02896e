"""``specivod backup``, ``specivod backups [--json]`` and ``specivod restore ID``."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import NoReturn

from tqdm import tqdm

from specivod.adapters.backup import (
    BackupManifest,
    Backups,
    Progress,
    backups_in,
)
from specivod.adapters.compose import ComposeDeployment
from specivod.commands import exit_codes
from specivod.commands.output import emit_json, error, say
from specivod.domain.errors import SpecivodError
from specivod.engine.journal import Journal
from specivod.engine.lock import host_lock
from specivod.settings import Settings

log = logging.getLogger(__name__)


class _ProgressBars:
    """One tqdm bar per phase, on stderr."""

    def __init__(self) -> None:
        self._phase: str | None = None
        self._bar: tqdm[NoReturn] | None = None

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        bar = self._bar
        if phase != self._phase or bar is None:
            self.close()
            self._phase = phase
            bar = self._bar = tqdm(
                desc=phase,
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
            )
        if total is not None and done > total:
            bar.total = done
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextlib.contextmanager
def _progress(show: bool) -> Iterator[Progress | None]:
    if not show:
        yield None
        return
    bars = _ProgressBars()
    try:
        yield bars
    finally:
        bars.close()


def _size(count: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, unit = float(count), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{count} B" if unit == 0 else f"{value:.1f} {units[unit]}"


async def backup(settings: Settings, *, show_progress: bool) -> int:
    deployment = ComposeDeployment(
        settings.deployment, database_service=settings.backup.database_service
    )
    backups = Backups(settings.backup, deployment)
    try:
        with host_lock(settings.state.dir, "backup"), _progress(show_progress) as progress:
            _refuse_between_versions(settings)
            manifest = await backups.create(
                version=deployment.pinned_version(),
                reason="manual",
                progress=progress,
                protect=_needed_for_rollback(settings),
            )
    except SpecivodError as problem:
        error(f"backup failed, no backup was kept: {problem}")
        return exit_codes.FAILED
    finally:
        deployment.close()
    say(
        f"backup {manifest.id} created in {backups.path(manifest.id)} "
        f"({manifest.durations.total_seconds:.1f} s): database {_size(manifest.database.size)}, "
        f"data dir {_size(manifest.data_dir.size)} ({manifest.data_dir.file_count} files); "
        f"version {manifest.version or 'unknown'}"
    )
    return exit_codes.OK


def _refuse_between_versions(settings: Settings) -> None:
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


def _needed_for_rollback(settings: Settings) -> list[str]:
    with Journal(settings.state.dir) as journal:
        return journal.backups_still_needed()


def list_backups(settings: Settings, as_json: bool) -> int:
    manifests = backups_in(settings.backup.dir)
    if as_json:
        emit_json(
            {
                "directory": str(settings.backup.dir),
                "backups": [manifest.to_json() for manifest in manifests],
            }
        )
        return exit_codes.OK
    if not manifests:
        say(f"no backups in {settings.backup.dir}")
        return exit_codes.OK
    say(f"{'ID':<20} {'CREATED (UTC)':<20} {'VERSION':<12} {'SIZE':>10}  REASON")
    for manifest in manifests:
        say(_row(manifest))
    return exit_codes.OK


def _row(manifest: BackupManifest) -> str:
    created = manifest.created_at.strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"{manifest.id:<20} {created:<20} {manifest.version or '-':<12} "
        f"{_size(manifest.size):>10}  {manifest.reason}"
    )
