"""What to send in ``Authorization``: nothing until the registry challenges, then Basic credentials
or a bearer token, cached until shortly before it expires.

The HTTP call to the token endpoint is injected (``TokenFetcher``) so the cache is independent of
the transport; the client supplies one that goes through its retrying transport.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import SecretStr

from specivod.adapters.clock import Clock
from specivod.adapters.registry.challenge import Challenge
from specivod.adapters.registry.credentials import Credentials, CredentialSource
from specivod.domain.errors import RegistryAuthError, RegistryProtocolError

log = logging.getLogger(__name__)

DEFAULT_TOKEN_LIFETIME = 60.0
"""Seconds a token lives when the endpoint does not say (the distribution token spec's default)."""
EXPIRY_MARGIN = 10.0
"""A token is renewed this long before it expires (at most half its lifetime), so a request never
leaves with a token that expires in flight."""


@dataclass(frozen=True)
class TokenGrant:
    token: SecretStr
    expires_in: float = DEFAULT_TOKEN_LIFETIME


TokenFetcher = Callable[[Challenge, Credentials | None], Awaitable[TokenGrant]]


def basic_header(credentials: Credentials) -> str:
    login = credentials.login
    if login is None:
        raise ValueError("Basic auth needs a username and password")
    encoded = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode("ascii")
    return f"Basic {encoded}"


def choose_challenge(challenges: list[Challenge]) -> Challenge | None:
    """Bearer if offered, else Basic; None when neither is (nothing else can be answered)."""
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return None


class Authenticator:
    """Authorization state for one repository on one registry."""

    def __init__(
        self, source: CredentialSource, fetch_token: TokenFetcher, clock: Clock, *, where: str
    ) -> None:
        self._where = where
        self._source = source
        self._fetch_token = fetch_token
        self._clock = clock
        self._challenge: Challenge | None = None
        self._credentials: Credentials | None = None
        self._credentials_loaded = False
        self._token: SecretStr | None = None
        self._token_expiry = 0.0
        self._lock = asyncio.Lock()

    def identity(self) -> str:
        """Who the registry was asked to accept, for messages."""
        if self._credentials is None:
            return "anonymous access"
        return f"{self._credentials.describe()} (from {self._source.describe()})"

    async def header(self) -> str | None:
        """The ``Authorization`` value for the next request, fetching a token if the cached one
        is missing or about to expire."""
        challenge = self._challenge
        if challenge is None:
            return None
        async with self._lock:
            if challenge.scheme == "basic":
                credentials = await self._load_credentials()
                if credentials is None:
                    raise RegistryAuthError(
                        f"{self._where}: the registry requires a login (Basic auth) and no "
                        f"credentials were found in {self._source.describe()}; set "
                        "registry.username and registry.password_file, or run docker login"
                    )
                if credentials.login is None:
                    raise RegistryAuthError(
                        f"{self._where}: the registry requires a username and password (Basic "
                        f"auth); {self._source.describe()} holds only an identity token"
                    )
                return basic_header(credentials)
            token = self._token
            if token is None or self._clock.monotonic() >= self._token_expiry:
                # Read credentials again: a helper may hand out short-lived ones.
                self._credentials_loaded = False
                token = await self._renew_token(challenge, await self._load_credentials())
            return f"Bearer {token.get_secret_value()}"

    def challenged(self, challenges: list[Challenge]) -> None:
        """Take a 401's challenges: forget the cached token and credentials (they may have been
        revoked or rotated) so the next ``header()`` authenticates afresh."""
        challenge = choose_challenge(challenges)
        if challenge is None:
            offered = ", ".join(challenge.scheme for challenge in challenges)
            raise RegistryAuthError(
                f"{self._where}: the registry asks for an unsupported auth scheme ({offered})"
            )
        if challenge.scheme == "bearer" and not challenge.params.get("realm"):
            raise RegistryProtocolError(
                f"{self._where}: the registry's Bearer challenge names no realm"
            )
        self._challenge = challenge
        self._token = None
        self._credentials_loaded = False

    async def _load_credentials(self) -> Credentials | None:
        if not self._credentials_loaded:
            try:
                self._credentials = await self._source.credentials()
            except RegistryAuthError as error:
                raise RegistryAuthError(f"{self._where}: {error}") from None
            self._credentials_loaded = True
        return self._credentials

    async def _renew_token(
        self, challenge: Challenge, credentials: Credentials | None
    ) -> SecretStr:
        log.debug(
            "fetching a registry token from %s (service %s) as %s",
            challenge.params.get("realm"),
            challenge.params.get("service"),
            credentials.username if credentials and credentials.username else "anonymous",
        )
        grant = await self._fetch_token(challenge, credentials)
        lifetime = max(grant.expires_in, 0.0)
        self._token = grant.token
        self._token_expiry = self._clock.monotonic() + lifetime - min(EXPIRY_MARGIN, lifetime / 2)
        return grant.token
