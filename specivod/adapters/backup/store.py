"""The backup directory: one sub-directory per backup, named by its id.

A backup is written into ``<id>.partial`` and renamed to ``<id>`` only once every file is
fsynced, checksummed and validated, so a directory named by a bare id is a complete backup and
anything else (a ``.partial`` left by a killed run) is never listed, never counted and is removed
by the next backup. Callers hold the host lock, so no other run can own a ``.partial``.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from specivod.adapters.backup.files import fsync_directory, make_private_directory, remove_tree
from specivod.adapters.backup.manifest import BackupManifest, read_manifest
from specivod.domain.errors import BackupError

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
_ID = re.compile(r"^\d{8}T\d{6}Z(?:-\d{2})?$")
_ID_FORMAT = "%Y%m%dT%H%M%SZ"


def format_id(moment: datetime, attempt: int = 0) -> str:
    """Sortable, time-based: ``20250301T020000Z``, then ``-01``, ``-02`` within one second."""
    stamp = moment.astimezone(UTC).strftime(_ID_FORMAT)
    return stamp if attempt == 0 else f"{stamp}-{attempt:02d}"


def is_backup_id(text: str) -> bool:
    return bool(_ID.match(text))


def select_expired(
    newest_first: Sequence[BackupManifest],
    keep: int,
    protected: Collection[str] = (),
    *,
    now: datetime | None = None,
    safety_max_age: timedelta | None = None,
) -> list[str]:
    """Ids to delete so that the newest ``keep`` valid backups remain; invalid ones go too, and
    a protected id never does. Safety backups are not counted: each goes once it is older than
    ``safety_max_age`` (never, when no age is given)."""
    kept = 0
    expired = []
    for manifest in newest_first:
        if manifest.safety and manifest.valid:
            too_old = (
                now is not None
                and safety_max_age is not None
                and now - manifest.created_at > safety_max_age
            )
            if too_old and manifest.id not in protected:
                expired.append(manifest.id)
        elif manifest.valid and kept < keep:
            kept += 1
        elif manifest.id not in protected:
            expired.append(manifest.id)
    return expired


def expected_size(newest_first: Sequence[BackupManifest]) -> int | None:
    """The size of the last valid backup, the best guess for the next one."""
    return next((manifest.size for manifest in newest_first if manifest.valid), None)


def _bytes(count: int) -> str:
    return f"{count} bytes ({count / (1 << 30):.2f} GiB)"


def require_free_space(free: int, expected: int, min_free: int, directory: Path) -> None:
    needed = expected + min_free
    if free < needed:
        raise BackupError(
            f"not enough free space in {directory}: {_bytes(free)} free, {_bytes(needed)} "
            f"needed (expected backup size {expected} + backup.min_free_bytes {min_free}); "
            "free some space there, e.g. by deleting old backups"
        )


_OUT_OF_SPACE = ("no space left on device", "disk quota exceeded")
"""How a full file system or an exhausted quota reads in a failed writer's stderr (Go's, C's)."""


def ran_out_of_space(stderr: str, free: int) -> bool:
    """Whether a writer that failed did so because the file system it wrote to is full."""
    text = stderr.lower()
    return free == 0 or any(reason in text for reason in _OUT_OF_SPACE)


def dump_does_not_fit(
    directory: Path, written: int, free: int, database_size: int | None, min_free: int
) -> BackupError:
    """The error of a dump that filled ``directory``'s file system: where, how far it got, and
    what is known of the room it needs."""
    if database_size is None:
        size = "the database's size could not be read"
    else:
        size = (
            f"the database takes {_bytes(database_size)} on the server (a dump is usually smaller)"
        )
    return BackupError(
        f"the database dump does not fit in {directory}: its file system filled up after "
        f"{_bytes(written)} of the dump ({_bytes(free)} free); the dump needs more than that: "
        f"{size}, and backup.min_free_bytes ({min_free}) are kept free besides. Free that much "
        "space there, e.g. by deleting old backups, or point backup.dir at a larger file system"
    )


class BackupStore:
    """Backups on disk under one directory (mode 0700)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def ensure(self) -> None:
        make_private_directory(self.directory)

    def path(self, backup_id: str) -> Path:
        if not is_backup_id(backup_id):
            raise BackupError(f"{backup_id!r} is not a backup id (they look like 20250301T020000Z)")
        return self.directory / backup_id

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.directory).free

    def new_id(self, now: datetime) -> str:
        for attempt in range(100):
            candidate = format_id(now, attempt)
            if not any(
                (self.directory / name).exists() for name in (candidate, candidate + PARTIAL_SUFFIX)
            ):
                return candidate
        raise BackupError(f"no free backup id for {format_id(now)} in {self.directory}")

    def start(self, backup_id: str) -> Path:
        """The private work directory a new backup is written into."""
        partial = self.path(backup_id).with_name(backup_id + PARTIAL_SUFFIX)
        partial.mkdir(mode=0o700)
        return partial

    def complete(self, backup_id: str) -> Path:
        """Publish a finished backup: one rename, made durable."""
        final = self.path(backup_id)
        final.with_name(backup_id + PARTIAL_SUFFIX).rename(final)
        fsync_directory(self.directory)
        return final

    def discard(self, backup_id: str) -> None:
        remove_tree(self.path(backup_id).with_name(backup_id + PARTIAL_SUFFIX))

    def remove_leftovers(self) -> list[str]:
        """Delete the ``.partial`` directories of runs that were killed."""
        if not self.directory.is_dir():
            return []
        leftovers = sorted(
            entry.name
            for entry in self.directory.iterdir()
            if entry.name.endswith(PARTIAL_SUFFIX)
            and is_backup_id(entry.name.removesuffix(PARTIAL_SUFFIX))
        )
        for name in leftovers:
            log.warning("removing %s, left over by an interrupted backup", self.directory / name)
            remove_tree(self.directory / name)
        return leftovers

    def manifests(self) -> list[BackupManifest]:
        """Every complete backup, newest first; unreadable ones are logged and skipped."""
        if not self.directory.is_dir():
            return []
        found = []
        for entry in self.directory.iterdir():
            if not is_backup_id(entry.name) or not entry.is_dir():
                continue
            try:
                found.append(read_manifest(entry))
            except (OSError, ValueError) as error:
                log.warning("ignoring %s: unreadable manifest (%s)", entry, error)
        return sorted(found, key=lambda manifest: manifest.id, reverse=True)

    def get(self, backup_id: str) -> BackupManifest:
        directory = self.path(backup_id)
        if not directory.is_dir():
            raise BackupError(f"no backup {backup_id} in {self.directory}")
        try:
            return read_manifest(directory)
        except (OSError, ValueError) as error:
            raise BackupError(f"backup {backup_id}: unreadable manifest: {error}") from None

    def delete(self, backup_id: str) -> None:
        log.info("deleting backup %s", backup_id)
        shutil.rmtree(self.path(backup_id))


def snapshot_does_not_fit(
    directory: Path, needed: int, free: int, min_free: int, cause: str
) -> BackupError:
    """The error of a data-dir snapshot that filled ``directory``'s file system after the dump
    fitted (``cause``: what the write said): the room this backup needs (its dump, the files it
    copies and the index) besides ``backup.min_free_bytes``."""
    return BackupError(
        f"the data dir snapshot does not fit in {directory}: its file system filled up "
        f"({cause}; {_bytes(free)} free); {_bytes(needed + min_free)} needed: "
        f"{_bytes(needed)} for this backup (its dump and the data dir files that changed) and "
        "backup.min_free_bytes "
        f"({min_free}). Free that much space there, e.g. by deleting old backups, or point "
        "backup.dir at a larger file system"
    )
