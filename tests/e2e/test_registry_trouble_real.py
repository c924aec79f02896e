"""Registry trouble during a real upgrade (issue 13, item 1): a fault-injecting proxy
(``tests.support.fault_proxy``) sits in front of a registry of this test's own, and dockerd pulls
through it. The registry dies between planning and pull, answers 500s, answers 429 with
``Retry-After``, or drops the connection in the middle of a blob. Each time ``specivod upgrade
--now`` either aborts — exit 1, the old version still running in the same container, ``.env``
byte-identical, the rows and files unchanged, the registry's problem named — or, when a retry
within the budget gets through, succeeds.

The registry serves a copy of the shared registry's storage plus a target release built for this
module (its own config and top layer), so every pull of the target really fetches blobs through
the proxy; the pulled tags are removed after each test."""

from __future__ import annotations

import itertools
import json
import secrets
import shutil
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.config import specivod_config, write_config
from sandbox.deployment import COMPOSE_FILE, SandboxDeployment, create_deployment
from sandbox.images import DOCKER_MANIFEST, ImageNames, forget, push_releases
from sandbox.releases import BASELINE, Behaviour, Release
from tests.conftest import Specivod, Stack
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.registry import RegistryProcess, start_registry

pytestmark = pytest.mark.stack

TARGET = "0.2.0"
REPOSITORY = "specivo/specivo"


@dataclass(frozen=True)
class _FreshRelease(Release):
    """A release whose image is new to this engine: the nonce changes its top layer."""

    nonce: str = ""

    def release_file(self) -> str:
        return super().release_file() + f"NONCE={self.nonce}\n"


@dataclass
class Rig:
    """The module's registry (restarted on its port when a test killed it), the proxy in front
    of it, and one deployment pulling through the proxy: every test but the last leaves it as
    it found it — that is what they check."""

    workdir: Path
    registry: RegistryProcess
    proxy: FaultProxy
    deployment: SandboxDeployment
    config_digest: str
    """The target's image config: a blob every pull of the target fetches."""

    def kill_registry(self) -> None:
        self.registry.process.kill()
        self.registry.process.wait()

    def revive(self) -> None:
        if self.registry.process.poll() is not None:
            port = int(self.registry.address.rpartition(":")[2])
            self.registry = start_registry(self.workdir, port=port)
            self.proxy.upstream = self.registry.address
        self.proxy.reset()


@dataclass
class Scene:
    rig: Rig
    specivod: Specivod
    env: bytes
    rows: str
    files: dict[str, str]
    container: tuple[object, object]

    @property
    def deployment(self) -> SandboxDeployment:
        return self.rig.deployment

    @property
    def proxy(self) -> FaultProxy:
        return self.rig.proxy

    def upgrade(self, *faults: Fault) -> tuple[int, str, float]:
        """``specivod upgrade --now --to TARGET`` with ``faults`` on: exit code, output, seconds."""
        self.proxy.faults = list(faults)
        started = time.monotonic()
        result = self.specivod("upgrade", "--now", "--to", TARGET, timeout=240)
        return result.returncode, result.stdout + result.stderr, time.monotonic() - started

    def last(self) -> dict[str, object]:
        result = self.specivod("history", "--json")
        assert result.returncode == 0, result.stderr
        transactions: list[dict[str, object]] = json.loads(result.stdout)["transactions"]
        return transactions[0] if transactions else {}

    def assert_aborted(self, code: int, output: str, problem: str) -> None:
        """Exit 1, the transaction ABORTED with ``problem`` in its reason, nothing touched."""
        assert code == 1, output
        last = self.last()
        assert last["state"] == "aborted", last
        assert problem in str(last["reason"]), last
        assert problem in output
        self.assert_untouched()
        print(f"reason: {last['reason']}")

    def assert_untouched(self) -> None:
        """The old version serves from the same container; .env, rows and files as before."""
        assert self.deployment.env_file.read_bytes() == self.env
        assert _container(self.deployment) == self.container
        assert self.deployment.running_version() == BASELINE
        assert self.deployment.api("/healthz")[0] == 200
        assert self.deployment.table_checksum() == self.rows
        assert self.deployment.data_hashes() == self.files


def _container(deployment: SandboxDeployment) -> tuple[object, object]:
    inspected = deployment.api_container()
    state = inspected["State"]
    assert isinstance(state, dict)
    return inspected["Id"], state["StartedAt"]


def _config_digest(registry: str, tag: str) -> str:
    request = urllib.request.Request(
        f"http://{registry}/v2/{REPOSITORY}/manifests/{tag}", headers={"Accept": DOCKER_MANIFEST}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        manifest = json.load(response)
    return str(manifest["config"]["digest"])


@pytest.fixture(scope="module")
def rig(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("fault-registry")
    shutil.copytree(stack.registry.root / "storage", workdir / "storage", symlinks=True)
    registry = start_registry(workdir)
    release = _FreshRelease(TARGET, Behaviour.HEALTHY, 2, nonce=secrets.token_hex(8))
    push_releases(stack.engine.client, ImageNames(registry.address), [release])
    proxy = FaultProxy(registry.address).start()
    images = ImageNames(proxy.address)
    compose = COMPOSE_FILE.replace("${SPECIVO_REGISTRY}/specivo/postgres:15", stack.images.database)
    try:
        deployment = create_deployment(
            tmp_path_factory.mktemp("deployment"), images, compose_file=compose
        )
    except BaseException:
        proxy.stop()
        registry.stop()
        raise
    rig = Rig(workdir, registry, proxy, deployment, _config_digest(registry.address, TARGET))
    rig.proxy.on_death = rig.kill_registry
    try:
        yield rig
    finally:
        deployment.down()
        for version in (BASELINE, TARGET):
            forget(stack.engine.client, f"{images.app}:{version}")
        rig.proxy.stop()
        rig.registry.stop()


@pytest.fixture
def scene(rig: Rig, tmp_path: Path) -> Scene:
    """A fresh journal and backup dir for this test; the deployment as it is before it."""
    rig.revive()
    deployment = rig.deployment
    assert deployment.running_version() == BASELINE, "an earlier test left the deployment changed"
    config = specivod_config(deployment, tmp_path)
    return Scene(
        rig,
        Specivod(write_config(tmp_path / "specivod.toml", config)),
        deployment.env_file.read_bytes(),
        deployment.table_checksum(),
        deployment.data_hashes(),
        _container(deployment),
    )


def _log(scene: Scene) -> str:
    return "\n".join(
        f"{e.at:.2f} {e.method} {e.path} [{e.user_agent[:20]}] {e.outcome}" for e in scene.proxy.log
    )


def test_registry_dying_between_planning_and_pull_aborts(scene: Scene) -> None:
    """specivod lists the tags and plans; as dockerd starts pulling, the registry and its
    proxy are gone (the first request is dropped, later connections refused)."""
    code, output, seconds = scene.upgrade(Fault("", client="docker", die=True))

    assert scene.proxy.dead, _log(scene)
    assert scene.rig.registry.process.poll() is not None
    planned = scene.proxy.requests("specivod", "/tags/list")
    assert [entry.outcome for entry in planned] == ["forwarded 200"], _log(scene)
    scene.assert_aborted(code, output, scene.proxy.address)
    print(f"registry gone: aborted in {seconds:.1f}s")


@pytest.mark.parametrize("where", ["manifest", "config blob"])
def test_500s_on_the_pull_abort(scene: Scene, where: str) -> None:
    path = "/manifests/" if where == "manifest" else scene.rig.config_digest
    code, output, seconds = scene.upgrade(Fault(path, client="docker", status=500))

    scene.assert_aborted(code, output, "500 Internal Server Error")
    assert scene.proxy.requests("docker", path), _log(scene)
    print(f"500 on every {where}: aborted in {seconds:.1f}s")


def test_429_on_the_pull_aborts(scene: Scene) -> None:
    """dockerd gives up on the first 429 whatever its Retry-After says: aborted, app serving."""
    code, output, seconds = scene.upgrade(
        Fault("/manifests/", client="docker", status=429, retry_after="1")
    )

    scene.assert_aborted(code, output, "toomanyrequests")
    print(f"429 to dockerd: aborted in {seconds:.1f}s")


def test_429_asking_for_longer_than_specivod_waits_fails_at_once(scene: Scene) -> None:
    """A Retry-After beyond the retry policy's longest wait (30 s) is not cut short and retried
    early: specivod gives up at the first answer, before any transaction, naming the wait."""
    code, output, seconds = scene.upgrade(
        Fault("/tags/list", client="specivod", status=429, retry_after="3600")
    )

    assert code == 1, output
    assert seconds < 30, f"{seconds:.0f}s: {output}"
    assert "429" in output and "3600" in output, output
    assert len(scene.proxy.requests("specivod", "/tags/list")) == 1, _log(scene)
    assert scene.last() == {}
    scene.assert_untouched()
    print(f"429 Retry-After 3600 to specivod: refused in {seconds:.1f}s: {output.splitlines()[-1]}")


@pytest.mark.parametrize("trouble", ["gone", "tag list cut mid-body"])
def test_registry_trouble_before_planning_starts_nothing(scene: Scene, trouble: str) -> None:
    """specivod's own reads fail (after its retries): no transaction is begun, exit 1, and the
    message names the registry and repository."""
    fault = (
        Fault("", client="specivod", die=True)
        if trouble == "gone"
        else Fault("/tags/list", client="specivod", cut_after=10)
    )
    code, output, seconds = scene.upgrade(fault)

    assert code == 1, output
    assert f"registry {scene.proxy.address}, repository {REPOSITORY}" in output, output
    assert ("cannot connect" if trouble == "gone" else "cut short") in output, output
    assert scene.last() == {}
    scene.assert_untouched()
    print(f"{trouble} before planning: refused in {seconds:.1f}s: {output.splitlines()[-1]}")


def test_connection_dropped_mid_blob_every_time_aborts(scene: Scene) -> None:
    code, output, seconds = scene.upgrade(Fault("/blobs/", client="docker", cut_after=100))

    scene.assert_aborted(code, output, "unexpected EOF")
    cut = [e for e in scene.proxy.requests("docker", "/blobs/") if e.outcome.startswith("cut")]
    assert len(cut) > 1, _log(scene)
    print(f"every blob cut: aborted in {seconds:.1f}s after {len(cut)} cut transfers")


def test_transient_trouble_is_retried_within_the_budget_and_succeeds(scene: Scene) -> None:
    """Runs last: it upgrades the module's deployment. Two 429s with Retry-After: 2 to
    specivod's tag list (honoured: the retries come 2 s apart); dockerd's first blob transfer
    cut mid-way and its next answered 500 (dockerd retries both)."""
    code, output, seconds = scene.upgrade(
        Fault("/tags/list", client="specivod", status=429, retry_after="2", times=2),
        Fault("/blobs/", client="docker", cut_after=100, times=1),
        Fault("/blobs/", client="docker", status=500, times=1),
    )

    assert code == 0, output + _log(scene)
    assert scene.last()["state"] == "succeeded"
    assert scene.deployment.running_version() == TARGET
    assert scene.deployment.psql("SELECT count(*) FROM issues") == "200"
    listings = [entry.at for entry in scene.proxy.requests("specivod", "/tags/list")]
    assert len(listings) == 3, _log(scene)
    assert all(b - a >= 2.0 for a, b in itertools.pairwise(listings)), listings
    assert all(fault.used == fault.times for fault in scene.proxy.faults), _log(scene)
    print(f"transient faults: succeeded in {seconds:.1f}s")
