"""The container registry, read through the OCI distribution API v2 (aiohttp, async).

Rule: everything that leaves this package is a tag list, a digest, or a typed
``specivod.domain.errors.RegistryError`` whose message names the registry and repository and never
a secret. Retries go through ``specivod.retrying.RetryPolicy``; every request has a timeout.
"""

from __future__ import annotations

from specivod.adapters.clock import Clock
from specivod.adapters.registry.challenge import Challenge, ChallengeSyntaxError, parse_challenges
from specivod.adapters.registry.client import MANIFEST_MEDIA_TYPES, RegistryClient
from specivod.adapters.registry.credentials import (
    Anonymous,
    Credentials,
    CredentialSource,
    DockerConfigCredentials,
    StaticCredentials,
    credential_source,
)
from specivod.retrying import RetryPolicy
from specivod.settings import RegistrySettings


def registry_from_settings(
    settings: RegistrySettings,
    *,
    retry: RetryPolicy | None = None,
    clock: Clock | None = None,
    credentials: CredentialSource | None = None,
) -> RegistryClient:
    """A client for ``registry.image``; credentials from the config, else from a docker config."""
    reference = settings.reference
    source = credentials or credential_source(
        reference.domain,
        username=settings.username,
        password=settings.password,
        docker_config=settings.docker_config,
    )
    return RegistryClient(
        reference,
        credentials=source,
        timeout=settings.timeout.total_seconds(),
        retry=retry or RetryPolicy(attempts=settings.attempts),
        page_size=settings.page_size,
        scheme=settings.scheme,
        clock=clock,
    )


__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "Anonymous",
    "Challenge",
    "ChallengeSyntaxError",
    "CredentialSource",
    "Credentials",
    "DockerConfigCredentials",
    "RegistryClient",
    "StaticCredentials",
    "credential_source",
    "parse_challenges",
    "registry_from_settings",
]
