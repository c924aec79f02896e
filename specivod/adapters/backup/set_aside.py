"""What restores set aside beside the data dir: ``<data dir>.replaced-<time>[-<label>]`` trees
holding the files a restore replaced or removed (or, for restores of archives, the whole data
dir it replaced).

Rule: a set-aside tree is deleted only when the time in its name (when the restore chose it)
is older than the configured age and no transaction that failed or is unfinished names it. Only
siblings of the data dir named exactly ``<data dir>.replaced-<time>[-tx<id>][-<n>]`` are ever
deleted: a tree without a time in its name (set aside by a specivod before snapshots, whose
mtime says nothing of when) or named like one by hand is listed, never deleted.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from specivod.adapters.backup.files import tree_size

log = logging.getLogger(__name__)

_STAMPED = re.compile(r"^(\d{8}T\d{6}Z)(?:-tx\d+)?(?:-\d+)?$")
_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class SetAside:
    path: Path
    created_at: datetime
    size: int
    """Bytes of its regular files."""


def replaced_prefix(data_dir: Path) -> str:
    return f"{data_dir.name}.replaced-"


def _stamp(suffix: str) -> datetime | None:
    """The time in a name specivod chose, or ``None`` for any other name."""
    match = _STAMPED.match(suffix)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), _STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def _candidates(data_dir: Path) -> list[tuple[Path, datetime, bool]]:
    """Each set-aside tree, when it was made, and whether its name says so (only those are
    ever pruned)."""
    parent = data_dir.parent
    if not parent.is_dir():
        return []
    prefix = replaced_prefix(data_dir)
    found = []
    for entry in os.scandir(parent):
        if not entry.name.startswith(prefix) or not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        stamp = _stamp(entry.name.removeprefix(prefix))
        try:
            created = stamp or datetime.fromtimestamp(path.lstat().st_mtime, UTC)
        except OSError:
            continue
        found.append((path, created, stamp is not None))
    return sorted(found, key=lambda item: item[1], reverse=True)


def list_set_aside(data_dir: Path) -> list[SetAside]:
    """The set-aside trees beside ``data_dir``, newest first, with their sizes."""
    return [SetAside(path, created, tree_size(path)) for path, created, _ in _candidates(data_dir)]


def prune_set_aside(
    data_dir: Path, max_age: timedelta, now: datetime, protected: Collection[str]
) -> list[Path]:
    """Delete the set-aside trees older than ``max_age`` that ``protected`` (paths) does not
    name; the deleted ones."""
    spared = {os.path.normpath(path) for path in protected}
    deleted = []
    for path, created, named_by_us in _candidates(data_dir):
        if not named_by_us or now - created <= max_age or os.path.normpath(path) in spared:
            continue
        log.info("deleting %s, set aside by a restore on %s", path, created.isoformat())
        try:
            shutil.rmtree(path)
        except OSError as error:
            log.warning("cannot delete %s: %s", path, error)
        else:
            deleted.append(path)
    return deleted
