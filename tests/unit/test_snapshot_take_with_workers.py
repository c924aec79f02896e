"""The snapshot, attack and sync tests again with every snapshot after the first walked by two
worker processes (``snapshot_pool``), however small the tree and its directories: the workers
must change nothing those tests see."""

from __future__ import annotations

import pytest

from specivod.adapters.backup import snapshot, snapshot_walk
from tests.unit.test_attack_snapshots import *  # noqa: F403
from tests.unit.test_datasync import *  # noqa: F403
from tests.unit.test_snapshot_take import *  # noqa: F403


@pytest.fixture(autouse=True)
def _two_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "planned_workers", lambda _index: 2)
    monkeypatch.setattr(snapshot_walk, "SMALLEST_BATCH", 1)
