"""The packages in packaging/ built and used for real: the .deb installed with ``dpkg -i`` on this
machine (then purged, leaving the machine as it was), and the container image built offline on a
base made from this machine's own files, running ``specivod check`` against a sandbox deployment."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import tarfile
import tomllib
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import docker
import pytest

from sandbox.config import specivod_config, write_config
from sandbox.deployment import SandboxDeployment
from sandbox.dockerd import SOCKET
from sandbox.releases import BASELINE
from tests.conftest import Stack

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
INSTALLED = (
    Path("/opt/specivod"),
    Path("/usr/bin/specivod"),
    Path("/etc/specivod"),
    Path("/var/lib/specivod"),
    Path("/lib/systemd/system/specivod.service"),
)
PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
BUSYBOX = Path("/bin/busybox")
LOADER = Path("/lib64/ld-linux-x86-64.so.2")
COMPOSE_PLUGIN = Path("/usr/libexec/docker/cli-plugins/docker-compose")
TAG = "specivod-packaging-test"


def run(*command: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("wheels")
    built = run(PACKAGING / "build-wheels", directory)
    assert built.returncode == 0, built.stderr
    return directory


def _project_version() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return str(project["version"])


def _purge() -> None:
    run("dpkg", "--purge", "specivod")


def test_the_deb_installs_runs_verifies_and_purges(wheels: Path, tmp_path: Path) -> None:
    present = [str(path) for path in INSTALLED if path.exists() or path.is_symlink()]
    assert not present, f"refusing to install over an existing specivod: {present}"
    built = run(PACKAGING / "build-deb", wheels, tmp_path)
    assert built.returncode == 0, built.stderr
    deb = Path(built.stdout.strip())

    installed = run("dpkg", "-i", deb)
    try:
        assert installed.returncode == 0, installed.stdout + installed.stderr
        version = run("/usr/bin/specivod", "--version")
        checked = run(
            "/usr/bin/specivod", "--config", "/etc/specivod/specivod.toml", "config", "check"
        )
        verified = run("systemd-analyze", "verify", "/lib/systemd/system/specivod.service")
        conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "specivod").stdout
        state = Path("/var/lib/specivod").stat()
    finally:
        _purge()

    assert version.returncode == 0, version.stderr
    assert _project_version() in version.stdout
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert verified.returncode == 0, verified.stderr
    assert "/etc/specivod/specivod.toml" in conffiles
    assert oct(state.st_mode & 0o777) == "0o700"
    left = [str(path) for path in INSTALLED if path.exists() or path.is_symlink()]
    assert not left, f"dpkg --purge left {left}"
    assert run("dpkg-query", "-W", "specivod").returncode != 0


def _libraries(binaries: Iterable[Path]) -> set[Path]:
    found: set[Path] = set()
    for binary in binaries:
        for line in run("ldd", binary).stdout.splitlines():
            parts = line.split("=>")
            if len(parts) == 2 and parts[1].strip().startswith("/"):
                found.add(Path(parts[1].split()[0]))
    return found


def _extension_modules(wheels: Path, into: Path) -> list[Path]:
    """The compiled modules in ``wheels``, unpacked so that ``ldd`` can name what they load."""
    modules: list[Path] = []
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.endswith(".so"):
                    modules.append(Path(archive.extract(name, into)))
    return modules


def _add_dir(archive: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    archive.addfile(info)


def _add_file(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def _python_base(wheels: Path, scratch: Path) -> bytes:
    """A root file system with this machine's python3.11, busybox as /bin/sh, and every library
    python, its extension modules, the wheels' modules, docker and the compose plugin load."""
    docker_cli = Path(shutil.which("docker") or "docker")
    binaries = [PYTHON, docker_cli, COMPOSE_PLUGIN, *(STDLIB / "lib-dynload").glob("*.so")]
    binaries += _extension_modules(wheels, scratch)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for directory in ("bin", "etc", "root", "usr", "usr/bin", "usr/lib", "var", "lib64"):
            _add_dir(archive, directory)
        _add_dir(archive, "tmp", 0o1777)
        archive.add(BUSYBOX, "bin/busybox")
        for applet in ("sh", "rm", "mkdir", "ls", "cat"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            archive.addfile(link)
        archive.add(PYTHON, "usr/bin/python3.11")
        archive.add(STDLIB, "usr/lib/python3.11", filter=_without_bytecode)
        for library in sorted(_libraries(binaries)):
            archive.add(library.resolve(), str(library).lstrip("/"))
        archive.add(LOADER.resolve(), str(LOADER).lstrip("/"))
        _add_file(archive, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        _add_file(archive, "etc/group", b"root:x:0:\n")
    return buffer.getvalue()


def _without_bytecode(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if "__pycache__" in info.name or "/test/" in f"{info.name}/" else info


def _docker_cli() -> bytes:
    """The docker CLI and compose plugin where the official ``docker:cli`` image has them."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(Path(shutil.which("docker") or "docker").resolve(), "usr/local/bin/docker")
        archive.add(COMPOSE_PLUGIN.resolve(), "usr/local/libexec/docker/cli-plugins/docker-compose")
    return buffer.getvalue()


def _import(client: docker.DockerClient, rootfs: bytes, tag: str) -> str:
    repository, version = tag.split(":")
    client.api.import_image_from_data(rootfs, repository=repository, tag=version)
    return tag


@pytest.fixture
def image(stack: Stack, wheels: Path, tmp_path: Path) -> Iterator[str]:
    client = stack.engine.client
    tags = [f"{TAG}/base:py311", f"{TAG}/docker-cli:1", f"{TAG}/specivod:test"]
    try:
        base = _import(client, _python_base(wheels, tmp_path / "modules"), tags[0])
        cli = _import(client, _docker_cli(), tags[1])
        context = tmp_path / "context"
        context.mkdir()
        shutil.copy(PACKAGING / "container" / "Dockerfile", context / "Dockerfile")
        shutil.copytree(wheels, context / "wheels")
        try:
            client.images.build(
                path=str(context),
                tag=tags[2],
                buildargs={"BASE": base, "DOCKER_CLI": cli},
                network_mode="none",
                rm=True,
                forcerm=True,
            )
        except docker.errors.BuildError as failed:
            log = "".join(str(chunk.get("stream", chunk)) for chunk in failed.build_log)
            pytest.fail(f"docker build failed: {failed.msg}\n{log[-3000:]}")
        yield tags[2]
    finally:
        for tag in reversed(tags):
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(tag, force=True)


def test_the_container_image_checks_a_sandbox_deployment(
    stack: Stack, deployment: SandboxDeployment, image: str, tmp_path: Path
) -> None:
    state_root = tmp_path / "specivod"
    config = specivod_config(deployment, state_root)
    (state_root / "backups").mkdir(parents=True)
    (state_root / "state").mkdir()
    config_file = write_config(tmp_path / "specivod.toml", config)
    mounts = {
        str(SOCKET): {"bind": "/var/run/docker.sock", "mode": "rw"},
        str(deployment.directory): {"bind": str(deployment.directory), "mode": "rw"},
        str(state_root / "backups"): {"bind": str(state_root / "backups"), "mode": "rw"},
        str(state_root / "state"): {"bind": str(state_root / "state"), "mode": "rw"},
        str(config_file): {"bind": "/etc/specivod/specivod.toml", "mode": "ro"},
    }

    container = stack.engine.client.containers.run(
        image,
        ["--config", "/etc/specivod/specivod.toml", "check", "--json"],
        volumes=mounts,
        network_mode="host",
        detach=True,
    )
    try:
        exit_code = container.wait(timeout=120)["StatusCode"]
        stdout = container.logs(stdout=True, stderr=False).decode()
        stderr = container.logs(stdout=False, stderr=True).decode()
    finally:
        container.remove(force=True)

    assert exit_code == 0, stderr
    report = json.loads(stdout)
    assert report["deployed"] == BASELINE
    assert report["target"] == "0.2.4"
