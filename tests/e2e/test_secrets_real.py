"""Secrets stay secret on the real stack (issue 13, item 8): with registry credentials from a
password file (an htpasswd registry), a webhook token file and a smoke secret, an upgrade that is
rolled back with a restore leaves none of the three values (nor the Basic auth header made of the
registry's) in anything specivod prints, journals, stores or exports; and nothing under the
backup and state directories is open to other users."""

from __future__ import annotations

import base64
import json
import secrets
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.config import specivod_config, write_config
from sandbox.deployment import SandboxDeployment, create_deployment
from sandbox.images import ImageNames
from sandbox.releases import BASELINE, MIGRATES_THEN_FAILS
from sandbox.smoke import smoke_health
from tests.conftest import Specivod, Stack
from tests.support.ports import free_port
from tests.support.registry import RegistryProcess, start_registry

pytestmark = pytest.mark.stack

USER = "specivod-robot"
ROOT = Path(__file__).parent.parent.parent


def _secret_file(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def auth_registry(stack: Stack, tmp_path: Path) -> Iterator[tuple[RegistryProcess, str]]:
    """An htpasswd registry serving the shared registry's images (its storage hard-linked:
    blobs are content-addressed and nothing here writes to them), and its password."""
    password = secrets.token_urlsafe(24)
    workdir = tmp_path / "auth-registry"
    workdir.mkdir()
    htpasswd = subprocess.run(
        ["htpasswd", "-Bbn", USER, password], check=True, capture_output=True, text=True
    ).stdout
    (workdir / "htpasswd").write_text(htpasswd)
    subprocess.run(
        ["cp", "-al", str(stack.registry.root / "storage"), str(workdir / "storage")], check=True
    )
    registry = start_registry(workdir, htpasswd=workdir / "htpasswd")
    try:
        yield registry, password
    finally:
        registry.stop()


@pytest.fixture
def docker_login(
    auth_registry: tuple[RegistryProcess, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A DOCKER_CONFIG of this test's own, logged in to the registry, for compose's pulls."""
    registry, password = auth_registry
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir(mode=0o700)
    auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
    (config_dir / "config.json").write_text(
        json.dumps({"auths": {registry.address: {"auth": auth}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    return config_dir


@pytest.fixture
def authed_deployment(
    auth_registry: tuple[RegistryProcess, str], docker_login: Path, tmp_path: Path
) -> Iterator[SandboxDeployment]:
    created = create_deployment(tmp_path, ImageNames(auth_registry[0].address))
    try:
        yield created
    finally:
        created.down()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body


def _post(url: str, token: str) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps({"version": "4", "status": "firing", "alerts": []}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def _daemon_answers(config: Path, log: Path, address: str, tokens: tuple[str, str]) -> bytes:
    """Start ``specivod run`` briefly: a webhook with the right token and one with a wrong one,
    then its ``/metrics`` and status."""
    with log.open("wb") as stream:
        daemon = subprocess.Popen(
            [*_cli(config), "-v", "run"], stdout=stream, stderr=subprocess.STDOUT, cwd=ROOT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(f"http://{address}/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                assert daemon.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        webhook = f"http://{address}/api/v1/alertmanager"
        right, wrong = (_post(webhook, token) for token in tokens)
        assert right < 500 and right != 401 and wrong == 401, (right, wrong)
        return _get(f"http://{address}/metrics") + _get(f"http://{address}/api/v1/status")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def _cli(config: Path) -> list[str]:
    return [sys.executable, "-m", "specivod", "--config", str(config)]


def _every_file(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield root
        yield from root.rglob("*")


def test_no_secret_leaks_and_nothing_is_open_to_other_users(
    authed_deployment: SandboxDeployment,
    auth_registry: tuple[RegistryProcess, str],
    tmp_path: Path,
) -> None:
    deployment = authed_deployment
    password = auth_registry[1]
    token, smoke_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir(mode=0o700)
    health = smoke_health(deployment, secret_dir)
    _secret_file(Path(health["secrets"]["password"]), smoke_secret)
    listen = f"127.0.0.1:{free_port()}"
    registry: dict[str, object] = {
        "image": deployment.images.app,
        "timeout": "10s",
        "username": USER,
        "password_file": str(_secret_file(secret_dir / "registry-password", password)),
    }
    config = specivod_config(
        deployment,
        tmp_path,
        registry=registry,
        health=health,
        http={"listen": listen, "token_file": str(_secret_file(secret_dir / "token", token))},
    )
    config_path = write_config(tmp_path / "specivod.toml", config)
    specivod = Specivod(config_path)
    basic = base64.b64encode(f"{USER}:{password}".encode()).decode()
    values = {"registry password": password, "basic auth": basic, "token": token}
    values["smoke secret"] = smoke_secret
    texts: dict[str, bytes] = {}

    wrong_password = secrets.token_urlsafe(24)
    values["a wrong registry password"] = wrong_password
    refused_config = {
        **config,
        "registry": {
            **registry,
            "password_file": str(_secret_file(secret_dir / "wrong-password", wrong_password)),
        },
    }
    refused = Specivod(write_config(tmp_path / "refused.toml", refused_config))("check")
    assert refused.returncode == 1 and "refused the credentials" in refused.stderr, refused
    texts["check with a wrong password"] = (refused.stdout + refused.stderr).encode()

    upgrade = specivod("upgrade", "--now", "--to", MIGRATES_THEN_FAILS)
    assert upgrade.returncode == 1, upgrade.stdout + upgrade.stderr
    texts["upgrade output"] = (upgrade.stdout + upgrade.stderr).encode()
    for arguments in (
        ("status", "--json"),
        ("status",),
        ("history", "--json"),
        ("history",),
        ("config", "show"),
        ("backups", "--json"),
        ("check",),
    ):
        result = specivod(*arguments)
        assert result.returncode in (0, 1), result.stdout + result.stderr  # 1: check's pin problem
        assert "refused the credentials" not in result.stderr, result.stderr
        texts[" ".join(arguments)] = (result.stdout + result.stderr).encode()
    last = json.loads(specivod("history", "--json").stdout)["transactions"][0]
    assert (last["state"], last["restored"]) == ("rolled_back", True), last
    assert deployment.running_version() == BASELINE
    assert "config show" in texts and b"registry" in texts["config show"]

    wrong_token = secrets.token_urlsafe(24)
    values["a wrong token presented"] = wrong_token
    texts["daemon /metrics + status"] = _daemon_answers(
        config_path, tmp_path / "daemon.log", listen, (token, wrong_token)
    )
    texts["daemon log"] = (tmp_path / "daemon.log").read_bytes()
    backup_dir, state_dir = tmp_path / "backups", tmp_path / "state"
    aside = Path(str(last["data_aside"]))
    stored = [p for p in _every_file(state_dir, backup_dir, aside) if p.is_file()]
    assert any(p.suffix in (".db", ".sqlite", ".sqlite3") for p in stored), stored
    for path in stored:
        texts[str(path)] = path.read_bytes()

    assert _leaks(values, texts) == []
    control = {p.name: p.read_bytes() for p in secret_dir.iterdir()}
    assert sorted(_leaks(values, control)) == sorted(
        [
            "registry password in registry-password",
            "smoke secret in smoke-password",
            "token in token",
            "a wrong registry password in wrong-password",
        ]
    ), "the search must find a value where it is"

    roots = [state_dir, backup_dir, aside]
    own_files = [p for p in backup_dir.glob("*/*") if p.is_file()]
    assert own_files, "no backup was kept"
    loose = [p for p in [*roots, *own_files] if _mode(p) & 0o077]
    assert loose == []
    exposed = [p for root in roots for p in root.rglob("*") if _exposed(p, root)]
    assert exposed == []


def _leaks(values: dict[str, str], texts: dict[str, bytes]) -> list[str]:
    return [
        f"{name} in {where}"
        for where, text in texts.items()
        for name, value in values.items()
        if value.encode() in text
    ]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _exposed(path: Path, root: Path) -> bool:
    """Whether the group or other users can read or write ``path``: every directory from ``root``
    to it searchable by that class, and the path itself readable or writable by it."""
    if stat.S_ISLNK(path.lstat().st_mode):
        return False
    directories = [root / relative for relative in path.relative_to(root).parents]
    return any(
        all(_mode(d) & search for d in directories) and _mode(path) & access
        for search, access in ((stat.S_IXGRP, 0o060), (stat.S_IXOTH, 0o006))
    )


def test_a_state_dir_made_by_the_operator_does_not_expose_the_journal(
    deployment: SandboxDeployment, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    state_dir.chmod(0o755)
    specivod = Specivod(
        write_config(tmp_path / "specivod.toml", specivod_config(deployment, tmp_path))
    )

    result = specivod("history", "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    assert (state_dir / "journal.sqlite3").is_file()
    exposed = [p for p in state_dir.rglob("*") if _exposed(p, state_dir)]
    assert exposed == [], [f"{p}: {stat.filemode(p.lstat().st_mode)}" for p in exposed]
