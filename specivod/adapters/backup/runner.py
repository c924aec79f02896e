"""What the backups need of the deployment: run compose commands (with stdin and stdout bound
to files, so dumps never pass through this process) and say where the data dir is."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Protocol

from specivod.adapters.process import Completed


class ComposeRunner(Protocol):
    async def compose(
        self,
        *arguments: str,
        version: str | None = None,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        """Run one compose command; the result is returned whatever its exit code."""
        ...

    def data_dir(self) -> Path | None:
        """The data dir the ``.env`` names, or ``None`` when it names none."""
        ...
