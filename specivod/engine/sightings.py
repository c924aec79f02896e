"""When each release became known, for ``policy.min_age``: a release becomes a target only after
it has been known that long.

Rule: a release is known since its image's creation time when that is plausible (after
``PLAUSIBLE_SINCE`` and not in the future; reproducible builds write 1970), otherwise since
specivod first saw its tag with that digest. A tag whose digest changes is a new release: its
first sighting starts again. Sightings live in the journal's SQLite file (table ``sightings``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from specivod.domain.durations import format_duration
from specivod.engine.sidecar import connect

PLAUSIBLE_SINCE = datetime(2013, 3, 1, tzinfo=UTC)
"""Docker's first release; an image claiming to be older was built reproducibly."""
CLOCK_SKEW = timedelta(hours=1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sightings (
    tag TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    created TEXT
);
"""


@dataclass(frozen=True)
class Sighting:
    tag: str
    digest: str
    first_seen: datetime
    created: datetime | None

    def known_since(self, now: datetime) -> datetime:
        if self.created is not None and plausible(self.created, now):
            return self.created
        return self.first_seen


def plausible(created: datetime, now: datetime) -> bool:
    return PLAUSIBLE_SINCE <= created <= now + CLOCK_SKEW


def _row(row: Mapping[str, str | None]) -> Sighting:
    created = row["created"]
    return Sighting(
        tag=str(row["tag"]),
        digest=str(row["digest"]),
        first_seen=datetime.fromisoformat(str(row["first_seen"])),
        created=datetime.fromisoformat(created) if created else None,
    )


class Sightings:
    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir

    def observe(self, tag: str, digest: str, created: datetime | None, now: datetime) -> Sighting:
        """Record that ``tag`` points at ``digest`` now; the first sighting is kept while the
        digest stays the same."""
        stamp = now.astimezone(UTC).isoformat()
        made = created.astimezone(UTC).isoformat() if created is not None else None
        with connect(self._state_dir, _SCHEMA) as db, db:
            row = db.execute("SELECT * FROM sightings WHERE tag = ?", (tag,)).fetchone()
            if row is None or row["digest"] != digest:
                db.execute(
                    "INSERT OR REPLACE INTO sightings (tag, digest, first_seen, created) "
                    "VALUES (?, ?, ?, ?)",
                    (tag, digest, stamp, made),
                )
            elif made is not None and row["created"] != made:
                db.execute("UPDATE sightings SET created = ? WHERE tag = ?", (made, tag))
            row = db.execute("SELECT * FROM sightings WHERE tag = ?", (tag,)).fetchone()
        return _row(row)

    def all(self) -> dict[str, Sighting]:
        with connect(self._state_dir, _SCHEMA) as db:
            rows = db.execute("SELECT * FROM sightings").fetchall()
        return {row["tag"]: _row(row) for row in rows}


def holds(
    tags: Iterable[str],
    sightings: Mapping[str, Sighting],
    min_age: timedelta,
    now: datetime,
) -> dict[str, str]:
    """The tags among ``tags`` not yet ``min_age`` old, each with why; a tag never seen is held
    too (it is as new as it gets). Nothing is held when ``min_age`` is zero."""
    if min_age <= timedelta(0):
        return {}
    held: dict[str, str] = {}
    for tag in tags:
        sighting = sightings.get(tag)
        if sighting is None:
            held[tag] = f"not seen yet; min_age {format_duration(min_age)}"
            continue
        since = sighting.known_since(now)
        eligible = since + min_age
        if eligible > now:
            source = "image created" if since is sighting.created else "first seen"
            held[tag] = (
                f"{source} {since.isoformat(timespec='seconds')}, eligible from "
                f"{eligible.isoformat(timespec='seconds')} (min_age {format_duration(min_age)})"
            )
    return held
