"""Smoke commands on the host: the operator's script, with specivod's environment plus the step's
variables, in a session of its own; a late one is killed with everything it started."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from specivod.adapters import process
from specivod.engine.smoke_steps import CommandOutcome


class SubprocessCommands:
    async def run(
        self, argv: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> CommandOutcome:
        try:
            completed = await process.run(argv, env={**os.environ, **env}, timeout=timeout)
        except process.CommandTimeout:
            raise TimeoutError from None
        output = "\n".join(part for part in (completed.stdout, completed.stderr) if part)
        return CommandOutcome(completed.returncode, output)
