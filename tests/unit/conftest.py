"""Fixtures for the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.local_http import Serve, local_servers


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    async with local_servers() as start:
        yield start
