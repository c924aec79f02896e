"""A Docker Engine of a test's own: a second dockerd with its own socket, data root, exec root,
pidfile and managed containerd, so a test may stop, SIGKILL and restart it without touching the
suite's shared engine. Clients reach it through ``DOCKER_HOST`` (``engine.environment()``).

Paths: the socket and exec root live under a short directory in /run (unix socket paths are
limited to 107 bytes); the data root under the caller's work directory. ``stop()`` kills every
process of this engine (dockerd, containerd, shims, container processes) and unmounts whatever
it left mounted under both roots; it never signals a process of another engine."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
from docker.errors import DockerException

from sandbox.deployment import COMPOSE_FILE, SandboxDeployment, create_deployment
from sandbox.images import ImageNames

SHORT_ROOT = Path("/run")
START_TIMEOUT = 60.0
CONTAINERD_GRACE = 10.0


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float, *, reaped: bool = False) -> bool:
    """Wait until ``pid`` is dead (``reaped``: until even its zombie is gone)."""

    def gone() -> bool:
        return not Path(f"/proc/{pid}").exists() if reaped else not _alive(pid)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone():
            return True
        time.sleep(0.05)
    return gone()


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _descendants(root: int, tree: dict[int, list[int]]) -> list[int]:
    found: list[int] = []
    pending = list(tree.get(root, []))
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(tree.get(pid, []))
    return found


@dataclass
class OwnDockerd:
    """One private dockerd. ``start()`` it, point clients at ``host``; ``kill(sig)`` and
    ``restart()`` for faults; ``stop()`` (idempotent) in teardown.

    Seen with dockerd 20.10 here (no ``--live-restore``): after ``kill()`` the containers keep
    running under their shims until dockerd starts again; that start stops them (SIGTERM, then
    SIGKILL after 10 s) and does not restart them, whatever their restart policy."""

    workdir: Path
    arguments: tuple[str, ...] = ()
    """More dockerd flags (e.g. ``("--live-restore",)``)."""
    log: Path = field(init=False)
    data_root: Path = field(init=False)
    run_dir: Path = field(init=False)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    last_kill_seconds: float = field(default=0.0, init=False)
    _containerd: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / "dockerd.log"
        self.data_root = self.workdir / "data-root"
        self.run_dir = SHORT_ROOT / f"spvd-{secrets.token_hex(4)}"

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "docker.pid"

    @property
    def containerd_socket(self) -> Path:
        return self.exec_root / "containerd" / "containerd.sock"

    @property
    def host(self) -> str:
        """The ``DOCKER_HOST`` value for this engine."""
        return f"unix://{self.socket}"

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with ``DOCKER_HOST`` set to this
        engine and any other Docker endpoint setting removed."""
        source = dict(os.environ if base is None else base)
        for name in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
            source.pop(name, None)
        return {**source, "DOCKER_HOST": self.host}

    @property
    def pid(self) -> int | None:
        """dockerd's pid while it runs."""
        if self.process is not None and self.process.poll() is None:
            return self.process.pid
        return None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start dockerd (and through it its own containerd) and wait until it answers."""
        if self.pid is not None:
            raise RuntimeError("this dockerd is already running")
        self._await_containerd_exit()
        self.run_dir.mkdir(mode=0o700, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as stream:
            self.process = subprocess.Popen(
                [
                    "dockerd",
                    f"--host=unix://{self.socket}",
                    f"--data-root={self.data_root}",
                    f"--exec-root={self.exec_root}",
                    f"--pidfile={self.pidfile}",
                    "--bridge=none",
                    "--iptables=false",
                    "--ip-masq=false",
                    f"--config-file={self._empty_config()}",
                    *self.arguments,
                ],
                stdout=stream,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"own dockerd exited with {self.process.returncode}: {self.tail()}"
                )
            if self.answers():
                self._containerd = self.containerd_pid()
                return
            time.sleep(0.1)
        raise RuntimeError(f"own dockerd did not answer within {timeout:.0f} s: {self.tail()}")

    def _empty_config(self) -> Path:
        # the machine's /etc/docker/daemon.json, if any, belongs to the shared engine
        path = self.run_dir / "daemon.json"
        path.write_text("{}\n")
        return path

    def answers(self) -> bool:
        """True when the engine answers a ping on its socket."""
        try:
            client = self.client(timeout=5)
        except DockerException:
            return False
        with contextlib.closing(client):
            try:
                return bool(client.ping())
            except DockerException:
                return False

    def client(self, timeout: int = 120) -> docker.DockerClient:
        """A Python SDK client for this engine (API version negotiated)."""
        return docker.DockerClient(base_url=self.host, version="auto", timeout=timeout)

    def docker(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The ``docker`` CLI against this engine."""
        return subprocess.run(
            ["docker", *arguments],
            capture_output=True,
            text=True,
            check=check,
            env=self.environment(),
        )

    def pull(self, *images: str) -> None:
        for image in images:
            self.docker("pull", "--quiet", image)

    def kill(self, sig: signal.Signals = signal.SIGKILL, timeout: float = 30) -> None:
        """Send ``sig`` to dockerd and wait for it to exit. Its containerd, shims and containers
        are left as that signal leaves them (SIGKILL: its containerd dies with it, the shims and
        containers keep running)."""
        if self.process is None or self.process.poll() is not None:
            return
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._await_containerd_exit()
        self.last_kill_seconds = time.monotonic() - started

    def _await_containerd_exit(self) -> None:
        """Once dockerd is dead (killed here or by anyone), wait for its containerd to be
        reaped. dockerd starts it with a parent-death signal, and a dockerd started before that
        containerd's zombie is gone (kill(pid, 0) still succeeds) adopts the dead pid and times
        out waiting for it."""
        if self._containerd is not None and self.pid is None:
            _wait_gone(self._containerd, CONTAINERD_GRACE, reaped=True)
            self._containerd = None

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop dockerd gracefully if it runs (SIGTERM), then start it again on the same roots."""
        self.kill(signal.SIGTERM)
        self.start(timeout)

    def containerd_pid(self) -> int | None:
        """The pid of this engine's managed containerd, if it runs."""
        for pidfile in (self.exec_root / "containerd" / "containerd.pid",):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                if _alive(pid) and "containerd" in " ".join(_cmdline(pid)[:1]):
                    return pid
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and self._is_our_containerd(int(entry.name)):
                return int(entry.name)
        return None

    def _is_our_containerd(self, pid: int) -> bool:
        arguments = _cmdline(pid)
        return (
            bool(arguments)
            and Path(arguments[0]).name == "containerd"
            and any(str(self.exec_root) in argument for argument in arguments)
        )

    def shim_pids(self) -> list[int]:
        """This engine's containerd shims (found by their containerd address)."""
        address = str(self.containerd_socket)
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            arguments = _cmdline(int(entry.name))
            if arguments and "containerd-shim" in Path(arguments[0]).name and address in arguments:
                pids.append(int(entry.name))
        return pids

    def container_pids(self) -> list[int]:
        """Every process of this engine's containers (the shims' descendants)."""
        tree = _children()
        return [pid for shim in self.shim_pids() for pid in _descendants(shim, tree)]

    def kill_everything(self, sig: signal.Signals = signal.SIGKILL) -> dict[str, list[int]]:
        """Signal dockerd, containerd, every shim and every container process of this engine at
        once (a host crash of the engine's software); returns the pids by role."""
        victims = {
            "dockerd": [self.pid] if self.pid is not None else [],
            "containerd": [pid] if (pid := self.containerd_pid()) is not None else [],
            "shims": self.shim_pids(),
            "containers": self.container_pids(),
        }
        for pids in victims.values():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        if sig == signal.SIGKILL:
            if self.process is not None:
                self.process.wait()
            self._await_containerd_exit()
        return victims

    def stop(self) -> None:
        """Stop this engine and everything it started; unmount what it left; remove the run
        directory. The data root stays (under the caller's work directory) until it goes."""
        self.kill(signal.SIGTERM)
        for _ in range(2):
            survivors = [*self.container_pids(), *self.shim_pids()]
            if (containerd := self.containerd_pid()) is not None:
                survivors.append(containerd)
            for pid in survivors:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in survivors:
                _wait_gone(pid, 10)
        self._unmount_all()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _unmount_all(self) -> None:
        roots = (str(self.data_root), str(self.run_dir))
        mounts = []
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/mountinfo").read_text().splitlines():
                point = line.split()[4].replace("\\040", " ")
                if any(point == root or point.startswith(root + "/") for root in roots):
                    mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def tail(self, lines: int = 30) -> str:
        """The end of dockerd's log, for failure messages."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def deployment_on(
    engine: OwnDockerd, images: ImageNames, directory: Path, *, compose_file: str = COMPOSE_FILE
) -> Iterator[SandboxDeployment]:
    """A sandbox deployment for a test that stops and starts ``engine``: taken down at the end,
    after starting the engine again if the test left it stopped."""
    created = create_deployment(directory, images, compose_file=compose_file)
    try:
        yield created
    finally:
        if engine.pid is None:
            engine.start()
        created.down()
