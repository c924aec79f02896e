"""The token endpoint of a Bearer challenge (the distribution token spec, as Docker Hub, GHCR and
Quay implement it): GET ``realm?service=&scope=`` with Basic credentials if any, or an OAuth2
refresh-token POST when the docker config holds an identity token."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr
from yarl import URL

from specivod.adapters.registry.auth import DEFAULT_TOKEN_LIFETIME, TokenGrant, basic_header
from specivod.adapters.registry.challenge import Challenge
from specivod.adapters.registry.credentials import Credentials
from specivod.adapters.registry.transport import Transport
from specivod.domain.errors import RegistryAuthError, RegistryProtocolError

CLIENT_ID = "specivod"


def _grant(document: Any) -> TokenGrant | None:
    if not isinstance(document, dict):
        return None
    token = document.get("token") or document.get("access_token")
    if not isinstance(token, str) or not token:
        return None
    expires_in = document.get("expires_in")
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool) or expires_in <= 0:
        expires_in = DEFAULT_TOKEN_LIFETIME
    return TokenGrant(token=SecretStr(token), expires_in=float(expires_in))


async def fetch_token(
    transport: Transport,
    challenge: Challenge,
    credentials: Credentials | None,
    *,
    scope: str,
    where: str,
    identity: Callable[[], str],
) -> TokenGrant:
    realm = URL(challenge.params.get("realm", ""))
    if realm.scheme not in ("http", "https") or not realm.host:
        raise RegistryProtocolError(
            f"{where}: the token realm {str(realm)!r} is not an http(s) URL"
        )
    service = challenge.params.get("service")
    if credentials is not None and credentials.identity_token is not None:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": credentials.identity_token.get_secret_value(),
            "client_id": CLIENT_ID,
            "scope": scope,
        }
        if service:
            form["service"] = service
        reply = await transport.exchange("POST", realm, data=form)
    else:
        query = {"scope": scope, **({"service": service} if service else {})}
        headers: dict[str, str] = {}
        if credentials is not None and credentials.login is not None:
            headers["Authorization"] = basic_header(credentials)
        reply = await transport.exchange("GET", realm.update_query(query), headers=headers)
    endpoint = realm.with_query(None)
    if reply.status in (401, 403):
        raise RegistryAuthError(
            f"{where}: the token service {endpoint} refused {identity()} ({reply.status})"
        )
    if not 200 <= reply.status < 300:
        raise RegistryProtocolError(
            f"{where}: the token service {endpoint} answered {reply.status} {reply.reason}"
        )
    try:
        grant = _grant(json.loads(reply.body))
    except ValueError:
        grant = None
    if grant is None:
        raise RegistryProtocolError(
            f"{where}: the token service {endpoint} sent no token (expected JSON with "
            "'token' or 'access_token')"
        )
    return grant
