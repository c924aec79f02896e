"""Real components for integration tests. A missing binary fails the test run: CI must run these."""

from __future__ import annotations

import shutil

import pytest

from tests.support.registry import REGISTRY_BINARY, registry_available


@pytest.fixture(scope="session", autouse=True)
def _real_registry_binaries() -> None:
    if not registry_available():
        pytest.fail(
            f"{REGISTRY_BINARY} is not installed (apt-get install docker-registry); "
            "integration tests need the real registry and are never skipped"
        )
    if shutil.which("htpasswd") is None:
        pytest.fail("htpasswd is not installed (apt-get install apache2-utils)")
