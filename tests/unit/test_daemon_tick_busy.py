"""The scheduler never queues an upgrade behind another daemon operation: a plan made while an
alert's rollback runs (its .env already back on the old version, its ROLLED_BACK not yet
journaled) would otherwise re-upgrade to the version being rolled back once the lock frees.
Found by tests/e2e/test_alertmanager_real.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.unit.test_daemon_service import NOW, daemon


async def test_no_upgrade_is_started_while_another_operation_holds_the_engine(
    tmp_path: Path,
) -> None:
    made, _ = daemon(tmp_path)
    started: list[str] = []

    async def upgrade(target: str) -> None:
        started.append(target)

    made.upgrade = upgrade  # type: ignore[method-assign]
    made._stop = asyncio.get_running_loop().create_future()
    assert made.decide(NOW).may_start

    async with made.busy:
        await made.tick()
    assert started == []

    await made.tick()
    assert started == ["0.2.0"]
