"""``specivod backup``, ``specivod backups [--json]`` and ``specivod restore ID``."""

from __future__ import annotations

import logging
import sys

from specivod.adapters.backup.backups import (
    BackupManifest,
    Backups,
    SetAside,
    backups_in,
)
from specivod.adapters.backup.estimate import human_size
from specivod.adapters.backup.manifest import DataDirSnapshot
from specivod.adapters.compose import ComposeDeployment
from specivod.commands import exit_codes
from specivod.commands.backup_rules import refuse_between_versions, still_needed
from specivod.commands.output import emit_json, error, say
from specivod.commands.progress_bars import progress_on
from specivod.domain.errors import LockedError, SpecivodError
from specivod.engine.lock import host_lock
from specivod.settings import Settings

log = logging.getLogger(__name__)


async def backup(settings: Settings) -> int:
    deployment = ComposeDeployment(
        settings.deployment, database_service=settings.backup.database_service
    )
    backups = Backups(settings.backup, deployment)
    try:
        with host_lock(settings.state.dir, "backup"), progress_on(sys.stderr) as progress:
            refuse_between_versions(settings)
            protect, keep_set_aside = still_needed(settings)
            manifest = await backups.create(
                version=deployment.pinned_version(),
                reason="manual",
                progress=progress,
                protect=protect,
                keep_set_aside=keep_set_aside,
            )
    except LockedError:
        raise  # the command's "busy" refusal, not a failed backup
    except SpecivodError as problem:
        error(f"backup failed, no backup was kept: {problem}")
        return exit_codes.FAILED
    finally:
        deployment.close()
    say(
        f"backup {manifest.id} created in {backups.path(manifest.id)} "
        f"({manifest.durations.total_seconds:.1f} s): "
        f"database {human_size(manifest.database.size)}, "
        f"data dir {_data_dir_summary(manifest)}; version {manifest.version or 'unknown'}"
    )
    return exit_codes.OK


def _data_dir_summary(manifest: BackupManifest) -> str:
    data = manifest.data_dir
    if not isinstance(data, DataDirSnapshot):
        return f"archive {human_size(data.size)} ({data.file_count} files)"
    linked = f", the rest linked to backup {data.base}" if data.base else ""
    return (
        f"{data.file_count} files, {human_size(data.bytes_total)}: {data.files_copied} copied "
        f"({human_size(data.bytes_copied)}){linked}"
    )


def list_backups(settings: Settings, as_json: bool) -> int:
    manifests = backups_in(settings.backup.dir)
    set_aside = _set_aside(settings)
    if as_json:
        emit_json(
            {
                "directory": str(settings.backup.dir),
                "backups": [manifest.to_json() for manifest in manifests],
                "set_aside": [
                    {
                        "path": str(tree.path),
                        "created_at": tree.created_at.isoformat(),
                        "size": tree.size,
                    }
                    for tree in set_aside
                ],
            }
        )
        return exit_codes.OK
    if not manifests:
        say(f"no backups in {settings.backup.dir}")
    else:
        say(f"{'ID':<20} {'CREATED (UTC)':<20} {'VERSION':<12} {'WROTE':>10} {'DATA':>10}  REASON")
        for manifest in manifests:
            say(_row(manifest))
    if set_aside:
        keep_for = settings.backup.keep_set_aside_for
        say(f"\nSet aside by restores (deleted after {keep_for.days} days unless still needed):")
        for tree in set_aside:
            created = tree.created_at.strftime("%Y-%m-%d %H:%M:%S")
            say(f"  {created}  {human_size(tree.size):>10}  {tree.path}")
    return exit_codes.OK


def _set_aside(settings: Settings) -> list[SetAside]:
    deployment = ComposeDeployment(
        settings.deployment, database_service=settings.backup.database_service
    )
    try:
        return Backups(settings.backup, deployment).set_aside()
    except SpecivodError as problem:
        log.warning("cannot list what restores set aside: %s", problem)
        return []
    finally:
        deployment.close()


def _row(manifest: BackupManifest) -> str:
    created = manifest.created_at.strftime("%Y-%m-%d %H:%M:%S")
    data = manifest.data_dir
    total = data.bytes_total if isinstance(data, DataDirSnapshot) else data.size
    reason = f"{manifest.reason} (safety)" if manifest.safety else manifest.reason
    return (
        f"{manifest.id:<20} {created:<20} {manifest.version or '-':<12} "
        f"{human_size(manifest.size):>10} {human_size(total):>10}  {reason}"
    )
