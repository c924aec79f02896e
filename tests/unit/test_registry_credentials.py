"""Credentials from the configuration or a docker config.json (``auths``, ``identitytoken``,
``credHelpers``/``credsStore`` through a fake ``docker-credential-*`` helper on PATH)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from specivod.adapters.registry import (
    Credentials,
    DockerConfigCredentials,
    StaticCredentials,
    credential_source,
)
from specivod.domain.errors import RegistryAuthError

REGISTRY = "registry.example:5000"


def write_config(directory: Path, document: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def helper(bin_dir: Path, name: str, script: str) -> None:
    """A ``docker-credential-<name>`` speaking the helper protocol (server URL on stdin)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text(f"#!/bin/sh\nread server\n{script}\n", encoding="utf-8")
    path.chmod(0o755)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    return home


def with_helpers_on_path(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


async def test_auths_entry_with_base64_auth(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {REGISTRY: {"auth": auth("alice", "s3:cret")}}})
    found = await DockerConfigCredentials(REGISTRY, path).credentials()
    assert found == Credentials(username="alice", password=SecretStr("s3:cret"))
    assert found is not None
    assert found.login == ("alice", "s3:cret")


async def test_auths_keyed_by_url_match_the_host(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, {"auths": {f"https://{REGISTRY}/v1/": {"auth": auth("bob", "pw")}}}
    )
    found = await DockerConfigCredentials(REGISTRY, path).credentials()
    assert found is not None
    assert found.username == "bob"


async def test_docker_hub_entry(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": auth("hubuser", "pw")}}}
    )
    found = await DockerConfigCredentials("docker.io", path).credentials()
    assert found is not None
    assert found.username == "hubuser"


async def test_identity_token(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {REGISTRY: {"identitytoken": "refresh-me"}}})
    found = await DockerConfigCredentials(REGISTRY, path).credentials()
    assert found is not None
    assert found.identity_token == SecretStr("refresh-me")
    assert found.login is None


async def test_no_entry_for_this_registry_is_anonymous(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {"other.example": {"auth": auth("x", "y")}}})
    assert await DockerConfigCredentials(REGISTRY, path).credentials() is None


async def test_cred_helper_for_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper(
        tmp_path / "bin",
        "fake",
        'echo "{\\"ServerURL\\": \\"$server\\", \\"Username\\": \\"helped\\", '
        '\\"Secret\\": \\"from-$server\\"}"',
    )
    with_helpers_on_path(tmp_path / "bin", monkeypatch)
    path = write_config(tmp_path, {"auths": {}, "credHelpers": {REGISTRY: "fake"}})
    found = await DockerConfigCredentials(REGISTRY, path).credentials()
    assert found == Credentials(username="helped", password=SecretStr(f"from-{REGISTRY}"))


async def test_creds_store_with_identity_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper(
        tmp_path / "bin",
        "store",
        'echo "{\\"ServerURL\\": \\"$server\\", \\"Username\\": \\"<token>\\", '
        '\\"Secret\\": \\"refresh\\"}"',
    )
    with_helpers_on_path(tmp_path / "bin", monkeypatch)
    path = write_config(tmp_path, {"credsStore": "store"})
    found = await DockerConfigCredentials(REGISTRY, path).credentials()
    assert found == Credentials(identity_token=SecretStr("refresh"))


async def test_helper_without_an_entry_falls_back_to_auths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper(tmp_path / "bin", "empty", 'echo "credentials not found in native keychain"; exit 1')
    with_helpers_on_path(tmp_path / "bin", monkeypatch)
    path = write_config(
        tmp_path,
        {"credsStore": "empty", "auths": {REGISTRY: {"auth": auth("fallback", "pw")}}},
    )
    found = await DockerConfigCredentials(REGISTRY, path).credentials()
    assert found is not None
    assert found.username == "fallback"


async def test_failing_helper_is_an_auth_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper(tmp_path / "bin", "broken", "echo 'keyring locked' >&2; exit 3")
    with_helpers_on_path(tmp_path / "bin", monkeypatch)
    path = write_config(tmp_path, {"credHelpers": {REGISTRY: "broken"}})
    with pytest.raises(RegistryAuthError, match=REGISTRY):
        await DockerConfigCredentials(REGISTRY, path).credentials()


async def test_missing_helper_is_an_auth_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"credHelpers": {REGISTRY: "not-installed-anywhere"}})
    with pytest.warns(UserWarning), pytest.raises(RegistryAuthError, match="docker config"):
        await DockerConfigCredentials(REGISTRY, path).credentials()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"auths": {"x": "not-a-dict"}}'])
async def test_unreadable_config_is_an_auth_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RegistryAuthError, match=str(path)):
        await DockerConfigCredentials(REGISTRY, path).credentials()


async def test_explicit_config_that_does_not_exist_is_an_auth_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryAuthError, match="cannot read docker config"):
        await DockerConfigCredentials(REGISTRY, tmp_path / "absent.json").credentials()


async def test_default_lookup_uses_docker_config_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path / "dockercfg", {"auths": {REGISTRY: {"auth": auth("env", "pw")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dockercfg"))
    found = await credential_source(REGISTRY).credentials()
    assert found is not None
    assert found.username == "env"


async def test_default_lookup_uses_home(isolated_home: Path) -> None:
    write_config(isolated_home / ".docker", {"auths": {REGISTRY: {"auth": auth("home", "pw")}}})
    found = await credential_source(REGISTRY).credentials()
    assert found is not None
    assert found.username == "home"


async def test_no_docker_config_at_all_is_anonymous() -> None:
    assert await credential_source(REGISTRY).credentials() is None


async def test_configured_username_wins_over_docker_config(isolated_home: Path) -> None:
    write_config(isolated_home / ".docker", {"auths": {REGISTRY: {"auth": auth("home", "pw")}}})
    source = credential_source(REGISTRY, username="configured", password=SecretStr("pw2"))
    assert isinstance(source, StaticCredentials)
    found = await source.credentials()
    assert found is not None
    assert found.username == "configured"


def test_secrets_never_in_repr() -> None:
    text = repr(Credentials(username="u", password=SecretStr("pw-1"))) + repr(
        Credentials(identity_token=SecretStr("tok-2"))
    )
    assert "pw-1" not in text
    assert "tok-2" not in text
