"""What the next backup will write, known before it starts: the free-space check, ``check``,
``status`` and the upgrade log all use it. The database dump is expected as big as the last one
(or as the database, before the first); the data dir costs the files changed since the last
snapshot plus the snapshot's metadata."""

from __future__ import annotations

from dataclasses import dataclass

from specivod.adapters.backup.snapshot import SnapshotEstimate


def human_size(count: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, unit = float(count), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{count} B" if unit == 0 else f"{value:.1f} {units[unit]}"


@dataclass(frozen=True)
class BackupEstimate:
    database_bytes: int
    data: SnapshotEstimate
    base: str | None
    """The backup whose snapshot unchanged files will be linked to, if any."""

    @property
    def bytes_needed(self) -> int:
        return self.database_bytes + self.data.bytes_needed

    def describe(self) -> str:
        since = f"changed since backup {self.base}" if self.base else "(first snapshot: all)"
        return (
            f"the backup will write about {human_size(self.bytes_needed)}: the database dump "
            f"(~{human_size(self.database_bytes)}) and {self.data.files_to_copy} of "
            f"{self.data.files} data dir files {since}, {human_size(self.data.bytes_to_copy)} "
            f"of {human_size(self.data.bytes_total)}"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "bytes_needed": self.bytes_needed,
            "database_bytes": self.database_bytes,
            "data_dir_files": self.data.files,
            "data_dir_bytes": self.data.bytes_total,
            "files_to_copy": self.data.files_to_copy,
            "bytes_to_copy": self.data.bytes_to_copy,
            "base": self.base,
        }
