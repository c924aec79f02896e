"""Attack review W on the real stack: a rollback resumed after dockerd restarted (a Docker package
upgrade, a reboot) restores under a failed release that dockerd started again by its restart
policy. Fixed: RESTORING that finds the app running stops it and takes a new safety backup.

The sequence (finding W2): an upgrade to a release that migrates then fails is rolled back;
specivod is SIGKILLed right after journaling RESTORING (the app stopped, the safety backup
taken). dockerd restarts: ``restart: always`` starts even a container ``docker compose stop``
stopped, so the failed release serves again, and users write to it. ``specivod recover`` resumes
RESTORING without stopping the app: the rows written since are in neither the restored database
nor any backup.

It runs on a Docker Engine of its own (``OwnDockerd``), so restarting dockerd never touches the
suite's shared one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.config import specivod_config, write_config
from sandbox.deployment import COMPOSE_FILE, SandboxDeployment
from sandbox.releases import BASELINE, MIGRATES_THEN_FAILS, SMOKE_PASSWORD, SMOKE_USER
from tests.conftest import Specivod, Stack
from tests.support.own_dockerd import OwnDockerd, deployment_on
from tests.support.waiting import wait_for

pytestmark = pytest.mark.stack

ALWAYS_RESTARTED = COMPOSE_FILE.replace("restart: unless-stopped", "restart: always").replace(
    "    network_mode: host\n    environment:\n      PGPORT",
    "    network_mode: host\n    restart: always\n    environment:\n      PGPORT",
)
PG_RESTORE = "/usr/lib/postgresql/15/bin/pg_restore"


@pytest.fixture
def engine(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OwnDockerd]:
    own = OwnDockerd(tmp_path_factory.mktemp("own-engine"))
    own.start()
    try:
        own.pull(stack.images.database, f"{stack.images.app}:{BASELINE}")
        monkeypatch.setenv("DOCKER_HOST", own.host)
        yield own
    finally:
        own.stop()


@pytest.fixture
def deployment(engine: OwnDockerd, stack: Stack, tmp_path: Path) -> Iterator[SandboxDeployment]:
    with deployment_on(engine, stack.images, tmp_path, compose_file=ALWAYS_RESTARTED) as created:
        yield created


def _post(url: str, body: bytes, headers: dict[str, str]) -> dict[str, object]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        loaded: dict[str, object] = json.loads(answer.read())
        return loaded


def _open_issue(deployment: SandboxDeployment, title: str) -> None:
    """What a user does: sign in and open an issue through the api."""
    base = f"http://127.0.0.1:{deployment.api_port}/cgi-bin/api"
    form = f"user={SMOKE_USER}&password={SMOKE_PASSWORD}".encode()
    session = _post(f"{base}/session", form, {"Content-Type": "application/x-www-form-urlencoded"})
    created = _post(
        f"{base}/issues",
        json.dumps({"title": title, "body": "written while the journal said STOPPED"}).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {session['token']}"},
    )
    assert created.get("title"), created


def _in_some_backup(backups_dir: Path, text: str) -> list[str]:
    """The backups whose database dump holds ``text``."""
    found = []
    for dump in sorted(backups_dir.glob("*/database.dump")):
        listed = subprocess.run(
            [PG_RESTORE, "--data-only", "-f", "-", str(dump)],
            capture_output=True,
            text=True,
            check=True,
        )
        if text in listed.stdout:
            found.append(dump.parent.name)
    return found


def test_rows_written_to_a_release_dockerd_restarted_mid_rollback_are_not_lost(
    engine: OwnDockerd, deployment: SandboxDeployment, tmp_path: Path
) -> None:
    config = specivod_config(deployment, tmp_path)
    specivod = Specivod(write_config(tmp_path / "specivod.toml", config))
    crashed = specivod("upgrade", "--now", "--to", MIGRATES_THEN_FAILS, crash_after="RESTORING")
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert deployment.compose("ps", "--quiet", "api").stdout.strip() == ""  # stopped by specivod

    engine.restart()  # e.g. apt upgraded docker-ce; restart: always starts the stopped api
    wait_for(
        f"the failed release {MIGRATES_THEN_FAILS} serving again",
        lambda: deployment.running_version() == MIGRATES_THEN_FAILS,
        120,
    )
    title = "opened-after-the-docker-restart"
    _open_issue(deployment, title)
    assert deployment.psql(f"SELECT count(*) FROM issues WHERE title = '{title}'") == "1"

    recovered = specivod("recover")

    history = json.loads(specivod("history", "--json").stdout)["transactions"]
    print(recovered.stdout + recovered.stderr, history[0])
    assert history[0]["state"] == "rolled_back", recovered.stdout + recovered.stderr
    wait_for("the api serving the baseline", lambda: deployment.running_version() == BASELINE, 60)
    in_database = deployment.psql(f"SELECT count(*) FROM issues WHERE title = '{title}'") == "1"
    backups_dir = Path(str(config["backup"]["dir"]))  # type: ignore[index]
    assert in_database or _in_some_backup(backups_dir, title), (
        "a row users wrote to the app specivod believed stopped is nowhere"
    )
