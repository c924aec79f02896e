"""Release notes and releases held for a person, on the real stack: ``check --json`` carries the
target's OCI labels and notes link read from the real registry, for a single-platform image and
for a multi-platform index; a release its publisher marks for attention is held by the daemon's
planner and by a plain ``upgrade`` (exit 0, nothing to do, ``.env`` untouched) until a person runs
``upgrade --to`` it; ``policy.min_age`` holds a plain ``upgrade`` too.

The releases live in a repository of their own (``NOTES_REPOSITORY``), so no other test's range
sees them."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.config import specivod_config, write_config
from sandbox.deployment import COMPOSE_FILE, SandboxDeployment, create_deployment
from sandbox.images import OCI, ImageNames, publish_index, push_releases
from sandbox.releases import BASELINE, Behaviour, Release
from tests.conftest import Specivod, Stack
from tests.e2e.test_daemon_real import Notifications, start_daemon, status_of
from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.stack

NOTES_REPOSITORY = "specivo-notes/specivo"
MARKED = "0.1.11"
"""Its image carries ``NOTICE``: the publisher says it needs a person."""
PLAIN = "0.1.12"
INDEXED = "0.2.0"
"""A multi-platform OCI index: arm64 → the 0.1.10 image (listed first), amd64 → the 0.1.12 one."""
BROKEN = "0.3.0"
"""Listed, but its image config blob was lost: its release info cannot be read."""
NOTICE = {"name": "com.specivo.notice", "value": "manual-steps"}
MARKED_DESCRIPTION = "Needs a manual reindex after the upgrade."
NOTES = "https://git.specivo.example/specivo/specivo/releases/tag/v{version}"
INDEX_ANNOTATIONS = {
    OCI + "title": "Specivo 0.2.0 (multi-platform)",
    OCI + "source": "https://git.specivo.example/specivo/specivo/tree/v0.2.0",
}
ALWAYS = [
    {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "start": "00:00",
        "end": "00:00",
        "timezone": "UTC",
    }
]


@pytest.fixture(scope="module")
def notes_images(stack: Stack) -> ImageNames:
    names = ImageNames(stack.images.registry, app_path=NOTES_REPOSITORY)
    releases = [Release(v, Behaviour.HEALTHY, 1) for v in (BASELINE, MARKED, PLAIN, BROKEN)]
    marked = {NOTICE["name"]: NOTICE["value"], OCI + "description": MARKED_DESCRIPTION}
    push_releases(stack.engine.client, names, releases, labels={MARKED: marked})
    lose_config(names.registry, BROKEN)
    publish_index(
        names.registry,
        NOTES_REPOSITORY,
        INDEXED,
        {"arm64": BASELINE, "amd64": PLAIN},
        INDEX_ANNOTATIONS,
    )
    return names


@pytest.fixture
def notes_deployment(notes_images: ImageNames, tmp_path: Path) -> Iterator[SandboxDeployment]:
    compose = COMPOSE_FILE.replace("/specivo/specivo:", f"/{NOTES_REPOSITORY}:")
    created = create_deployment(tmp_path, notes_images, compose_file=compose)
    try:
        yield created
    finally:
        created.down()


def cli(deployment: SandboxDeployment, root: Path, **sections: Any) -> Specivod:
    """The CLI with its own config file, state and backups under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    config = specivod_config(deployment, root, **sections)
    return Specivod(write_config(root / "specivod.toml", config))


def lose_config(registry: str, tag: str) -> None:
    """Delete the tag's image config blob from the registry, as a failed storage would."""
    request = urllib.request.Request(
        f"http://{registry}/v2/{NOTES_REPOSITORY}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        config = json.load(answer)["config"]["digest"]
    delete = urllib.request.Request(
        f"http://{registry}/v2/{NOTES_REPOSITORY}/blobs/{config}", method="DELETE"
    )
    with urllib.request.urlopen(delete, timeout=10) as answer:
        assert answer.status == 202


def head_digest(registry: str, tag: str) -> str:
    accept = "application/vnd.docker.distribution.manifest.v2+json, " + (
        "application/vnd.oci.image.index.v1+json"
    )
    request = urllib.request.Request(
        f"http://{registry}/v2/{NOTES_REPOSITORY}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": accept},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(answer.headers["Docker-Content-Digest"])


def test_check_json_carries_labels_and_notes_for_an_image_and_for_an_index(
    notes_deployment: SandboxDeployment, tmp_path: Path
) -> None:
    registry = notes_deployment.images.registry
    single = cli(
        notes_deployment, tmp_path / "single", policy={"range": "~0.1", "release_notes": NOTES}
    )
    indexed = cli(
        notes_deployment,
        tmp_path / "index",
        policy={"range": ">=0.1.10 <0.3", "release_notes": NOTES},
    )

    image = single("check", "--json")
    index = indexed("check", "--json")
    text = single("check")

    assert image.returncode == 0, image.stderr
    report = json.loads(image.stdout)
    assert report["target"] == PLAIN
    release = report["release"]
    assert release["version"] == PLAIN
    assert release["digest"] == head_digest(registry, PLAIN)
    assert release["notes"] == f"https://git.specivo.example/specivo/specivo/releases/tag/v{PLAIN}"
    assert release["unavailable"] is None
    labels = release["labels"]
    assert labels[OCI + "title"] == f"Specivo {PLAIN}"
    assert labels[OCI + "description"] == f"Sandbox release {PLAIN}: healthy."
    assert labels[OCI + "source"] == "https://git.specivo.example/specivo/specivo"
    assert labels[OCI + "url"] == "https://specivo.example/"
    assert len(labels[OCI + "revision"]) == 40
    assert labels[OCI + "created"] == "2026-01-15T09:30:00Z"

    assert index.returncode == 0, index.stderr
    report = json.loads(index.stdout)
    assert report["target"] == INDEXED
    release = report["release"]
    assert release["digest"] == head_digest(registry, INDEXED)
    assert release["labels"][OCI + "title"] == INDEX_ANNOTATIONS[OCI + "title"]
    assert release["labels"][OCI + "source"] == INDEX_ANNOTATIONS[OCI + "source"]
    assert release["labels"][OCI + "description"] == f"Sandbox release {PLAIN}: healthy."
    assert release["notes"].endswith(f"/v{INDEXED}")

    assert f"release:     release {PLAIN}: Specivo {PLAIN}; Sandbox release" in text.stdout


def test_release_info_the_registry_cannot_give_is_shown_unavailable_and_holds_nothing(
    notes_deployment: SandboxDeployment, tmp_path: Path
) -> None:
    policy = {"range": ">=0.3.0 <0.4", "step": "any", "release_notes": NOTES}
    specivod = cli(notes_deployment, tmp_path, policy={**policy, "attention_label": NOTICE})

    checked = specivod("check", "--json")
    text = specivod("check")

    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["target"] == BROKEN and report["held"] == {}
    release = report["release"]
    assert release["labels"] == {} and release["notes"].endswith(f"/v{BROKEN}")
    assert "not found" in release["unavailable"] and NOTES_REPOSITORY in release["unavailable"]
    assert f"release {BROKEN}: release notes unavailable: registry " in text.stdout


def test_a_marked_release_is_held_until_a_person_upgrades_to_it(
    notes_deployment: SandboxDeployment, tmp_path: Path
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    policy = {
        "range": "~0.1",
        "attention_label": NOTICE,
        "release_notes": NOTES,
        "expected_duration": "1s",
    }
    specivod = cli(
        notes_deployment,
        tmp_path,
        registry={"image": notes_deployment.images.app, "timeout": "10s", "poll_interval": "1s"},
        policy=policy,
        window=ALWAYS,
        http={"listen": listen},
    )
    before = notes_deployment.env_file.read_bytes()

    checked = json.loads(specivod("check", "--json").stdout)
    assert checked["target"] is None
    assert "marked for attention (com.specivo.notice=manual-steps)" in checked["held"][MARKED]
    assert checked["release"]["version"] == MARKED
    assert checked["release"]["labels"][OCI + "description"] == MARKED_DESCRIPTION

    base = f"http://{listen}"
    notify = Notifications(tmp_path / "notify.sock")
    daemon = start_daemon(specivod.config, notify, tmp_path / "daemon.log")
    try:
        wait_for("a first poll", lambda: status_of(base)["last_poll_result"] == "ok", 30)
        time.sleep(3)  # several scheduler ticks in an open window
        status = status_of(base)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        notify.close()
    log = (tmp_path / "daemon.log").read_text()
    assert status["daemon"]["target"] is None, log
    assert MARKED in status["daemon"]["held"], status
    assert PLAIN in status["daemon"]["plan"] or MARKED in status["daemon"]["plan"]
    assert status["daemon"]["release"]["version"] == MARKED
    assert status["daemon"]["release"]["labels"][OCI + "title"] == f"Specivo {MARKED}"
    assert status["deployed"] == BASELINE and status["transaction"] is None
    assert notes_deployment.env_file.read_bytes() == before

    plain = specivod("upgrade", "--now")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert plain.stdout.startswith(f"nothing to upgrade: {MARKED} is held: marked for attention")
    assert notes_deployment.env_file.read_bytes() == before

    chosen = specivod("upgrade", "--now", "--to", MARKED)
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    first = chosen.stdout.splitlines()[0]
    assert first.startswith(f"release {MARKED}: Specivo {MARKED}; {MARKED_DESCRIPTION}"), first
    assert first.endswith(
        f"notes https://git.specivo.example/specivo/specivo/releases/tag/v{MARKED}"
    )
    assert f"SPECIVO_VERSION={MARKED}" in notes_deployment.env_file.read_text()
    assert notes_deployment.running_version() == MARKED

    status = json.loads(specivod("status", "--json").stdout)
    assert status["release"]["version"] == MARKED
    assert status["release"]["labels"][OCI + "description"] == MARKED_DESCRIPTION
    after = json.loads(specivod("check", "--json").stdout)
    assert after["target"] == PLAIN and after["held"] == {}


def test_min_age_holds_a_plain_upgrade(notes_deployment: SandboxDeployment, tmp_path: Path) -> None:
    specivod = cli(notes_deployment, tmp_path, policy={"range": "~0.1", "min_age": "1000d"})
    before = notes_deployment.env_file.read_bytes()

    plain = specivod("upgrade", "--now")

    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert plain.stdout.startswith(f"nothing to upgrade: {MARKED} is held: image created ")
    assert "min_age 1000d" in plain.stdout
    assert notes_deployment.env_file.read_bytes() == before
