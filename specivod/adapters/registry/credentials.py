"""Where registry credentials come from: the configuration (username + password file), or a docker
``config.json`` (``auths``, ``credsStore``, ``credHelpers``), read through the docker SDK's
``docker.auth`` so credential helpers behave exactly as for ``docker pull``.

A docker config is read again each time credentials are needed (rarely: once per token), so a
helper that rotates short-lived credentials keeps working in a long-running daemon.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from docker import auth as docker_auth
from docker.errors import DockerException
from docker.utils.config import find_config_file
from pydantic import SecretStr

from specivod.domain.errors import RegistryAuthError


@dataclass(frozen=True)
class Credentials:
    """A login (``username`` + ``password``) or an OAuth2 refresh token (``identity_token``)."""

    username: str | None = None
    password: SecretStr | None = None
    identity_token: SecretStr | None = None

    @property
    def login(self) -> tuple[str, str] | None:
        if self.username is None or self.password is None:
            return None
        return self.username, self.password.get_secret_value()

    def describe(self) -> str:
        if self.identity_token is not None:
            return "the identity token"
        return f"the credentials of user {self.username!r}"


class CredentialSource(Protocol):
    async def credentials(self) -> Credentials | None:
        """Current credentials, or None for anonymous access."""
        ...

    def describe(self) -> str:
        """Where credentials come from, for messages (never the secret itself)."""
        ...


@dataclass(frozen=True)
class StaticCredentials:
    value: Credentials
    origin: str = "the configuration"

    async def credentials(self) -> Credentials | None:
        return self.value

    def describe(self) -> str:
        return self.origin


class Anonymous:
    async def credentials(self) -> Credentials | None:
        return None

    def describe(self) -> str:
        return "no credentials"


def _credentials_from_authconfig(entry: dict[str, Any]) -> Credentials | None:
    # docker.auth spells keys in lower case for `auths` entries and capitalised for helpers.
    identity = entry.get("IdentityToken") or entry.get("identitytoken")
    if identity:
        return Credentials(username=None, identity_token=SecretStr(str(identity)))
    username = entry.get("username") or entry.get("Username")
    password = entry.get("password") or entry.get("Password")
    if username and password is not None:
        return Credentials(username=str(username), password=SecretStr(str(password)))
    return None


@dataclass(frozen=True)
class DockerConfigCredentials:
    """Credentials for ``registry`` (a reference's domain, e.g. ``docker.io``) from a docker
    config.json: ``path``, or docker's default lookup ($DOCKER_CONFIG, ~/.docker) when None."""

    registry: str
    path: Path | None = None

    def _config_file(self) -> Path | None:
        if self.path is not None:
            return self.path
        found = find_config_file()
        return Path(found) if isinstance(found, str | Path) else None

    def _resolve(self) -> Credentials | None:
        config_file = self._config_file()
        if config_file is None:
            return None
        try:
            document = json.loads(config_file.read_text(encoding="utf-8"))
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            config = docker_auth.load_config(config_dict=document)
            entry = docker_auth.resolve_authconfig(config, registry=self.registry)
        except OSError as error:
            raise RegistryAuthError(
                f"cannot read docker config {config_file}: {error.strerror or error}"
            ) from None
        except (ValueError, KeyError, DockerException) as error:
            raise RegistryAuthError(
                f"cannot get credentials for {self.registry} from docker config {config_file}: "
                f"{error}"
            ) from None
        return _credentials_from_authconfig(entry) if entry else None

    async def credentials(self) -> Credentials | None:
        return await asyncio.to_thread(self._resolve)

    def describe(self) -> str:
        return f"docker config {self.path}" if self.path else "the default docker config"


def credential_source(
    registry: str,
    *,
    username: str | None = None,
    password: SecretStr | None = None,
    docker_config: Path | None = None,
) -> CredentialSource:
    """The configured username wins; otherwise the docker config (explicit or default lookup)."""
    if username is not None:
        if password is None:
            raise RegistryAuthError(f"registry user {username!r} is configured without a password")
        return StaticCredentials(Credentials(username=username, password=password))
    return DockerConfigCredentials(registry=registry, path=docker_config)
