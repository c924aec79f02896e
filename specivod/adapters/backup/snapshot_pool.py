"""The worker processes of a snapshot walk (``snapshot_worker``), so linking 100,000 unchanged
files is not held to one core by the interpreter lock.

Rule: the pool is an optimisation that changes no result. It starts only where it pays (a
previous snapshot with many files, more than one CPU) and, when its workers cannot start, the
walk goes on without them. Once started, a worker that fails or dies fails the snapshot; every
worker is stopped, and waited for, before the walk returns, so none can still write into a
tree that is being removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import specivod
from specivod.adapters.backup.snapshot_worker import Batch, Reply, receive, send
from specivod.domain.errors import BackupError

log = logging.getLogger(__name__)

PARALLEL_FROM = 5_000
"""Files in the previous snapshot from which workers pay for their start (about 0.1 s each)."""
MAX_WORKERS = 4
START_SECONDS = 30.0
STOP_SECONDS = 10.0


def worker_count(previous_files: int) -> int:
    """How many workers a walk against a previous snapshot of that many files gets (0: none)."""
    cpus = len(os.sched_getaffinity(0))
    if previous_files < PARALLEL_FROM or cpus < 2:
        return 0
    return min(cpus, MAX_WORKERS)


_WORKER_MAIN = (
    "import sys\n"
    "from specivod.adapters.backup.snapshot_worker import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


class _Worker:
    def __init__(self, *, source: str, checksum: bool, tree_device: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._channel = ours
        self._waiting: list[Future[Reply]] = []
        self._lock = threading.Lock()
        self.outstanding = 0
        package_root = str(Path(specivod.__file__).resolve().parent.parent)
        path = os.environ.get("PYTHONPATH")
        environment = {
            **os.environ,
            "PYTHONPATH": f"{package_root}:{path}" if path else package_root,
        }
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-P",  # no current directory on sys.path: only specivod's own package runs
                    "-c",  # not -m: the worker's code keeps its module name (pickling, mutmut)
                    _WORKER_MAIN,
                    str(os.getpid()),
                    str(theirs.fileno()),
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # never into a command's --json output
                env=environment,
                cwd="/",
                start_new_session=True,  # a terminal's Ctrl-C is for specivod, which stops
                # at the next step boundary: it must not kill the workers in the middle of one
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.ready = threading.Event()
        self.problem = ""
        self._reader = threading.Thread(target=self._read, name="snapshot-worker-reader")
        self._reader.daemon = True
        try:
            send(ours, (source, checksum, tree_device))
            self._reader.start()
        except BaseException:
            self.process.kill()
            self.process.wait()
            ours.close()
            raise

    def submit(self, batch: Batch, directories: list[int]) -> Future[Reply]:
        future: Future[Reply] = Future()
        with self._lock:
            self._waiting.append(future)
            self.outstanding += 1
        try:
            send(self._channel, batch, directories)
        except OSError as error:
            self._fail(BackupError(f"a snapshot worker cannot be reached: {error}"))
        return future

    def _read(self) -> None:
        try:
            hello = receive(self._channel)
        except (OSError, EOFError) as error:
            hello = None
            self.problem = f"{error}"
        if hello is None or hello[0][0] != "ready":
            code = self.process.poll()
            self.problem = f"it answered {hello!r} (exit code {code}) {self.problem}".strip()
            self.ready.set()
            return
        self.ready.set()
        while True:
            try:
                message = receive(self._channel)
            except (OSError, EOFError) as error:
                message, failure = None, f"{error}"
            else:
                failure = ""
            if message is None:
                code = self.process.wait()
                self._fail(
                    BackupError(
                        f"a snapshot worker (pid {self.process.pid}) ended with exit code "
                        f"{code} {failure}".rstrip()
                    )
                )
                return
            with self._lock:
                if not self._waiting:
                    continue  # its batch was failed already: the channel broke while sending
                future = self._waiting.pop(0)
                self.outstanding -= 1
            _resolve(future, message[0])

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, []
            self.outstanding = 0
        for future in waiting:
            if not future.done():
                future.set_exception(error)

    def stop(self, *, kill: bool) -> None:
        """Closing the channel ends the worker after its batch; ``kill`` ends it at once."""
        if kill:
            self.process.kill()
        with contextlib.suppress(OSError):
            self._channel.shutdown(socket.SHUT_RDWR)
        try:
            self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join()
        self._channel.close()


def _resolve(future: Future[Reply], reply: tuple[Any, ...]) -> None:
    kind = reply[0]
    if kind == "ok":
        future.set_result(reply[1])
    elif kind == "oserror":
        number, text, filename = reply[1:]
        error = OSError(number, text) if filename is None else OSError(number, text, filename)
        future.set_exception(error)
    else:
        future.set_exception(BackupError(f"a snapshot worker failed: {reply[1]}"))


class WorkerPool:
    """Batches go to the worker with the fewest outstanding; ``close`` stops them all."""

    def __init__(self, count: int, *, source: str, checksum: bool, tree_device: int) -> None:
        self._workers: list[_Worker] = []
        try:
            for _ in range(count):
                self._workers.append(
                    _Worker(source=source, checksum=checksum, tree_device=tree_device)
                )
        except BaseException:
            self.close(kill=True)
            raise

    def wait_ready(self) -> str:
        """Why a worker did not start (after ``START_SECONDS`` at most), or ""."""
        for worker in self._workers:
            if not worker.ready.wait(START_SECONDS):
                return f"worker {worker.process.pid} did not answer in {START_SECONDS:.0f} s"
            if worker.problem:
                return f"worker {worker.process.pid}: {worker.problem}"
        return ""

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    def submit(self, batch: Batch, directories: list[int]) -> Future[Reply]:
        worker = min(self._workers, key=lambda each: each.outstanding)
        return worker.submit(batch, directories)

    def close(self, *, kill: bool = False) -> None:
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop(kill=kill)


def start_pool(count: int, *, source: str, checksum: bool, tree_device: int) -> WorkerPool | None:
    """``count`` workers starting (``WorkerPool.wait_ready``), or None (logged) when they cannot
    be started: the walk then goes alone."""
    if count == 0:
        return None
    try:
        return WorkerPool(count, source=source, checksum=checksum, tree_device=tree_device)
    except (OSError, ValueError, RuntimeError) as error:  # RuntimeError: no thread to spare
        log.warning("snapshot: walking without worker processes, they did not start: %s", error)
        return None


def ready_pool(pool: WorkerPool | None) -> WorkerPool | None:
    """The pool once every worker answered; None (logged, the pool stopped) if one did not."""
    if pool is None:
        return None
    problem = pool.wait_ready()
    if not problem:
        return pool
    pool.close(kill=True)
    log.warning("snapshot: walking without worker processes, they did not start: %s", problem)
    return None


INDEX_BYTES_PER_FILE = 40
"""At least, gzip'd: a sha256 alone takes about 35 (what the index size says of its files)."""


def planned_workers(previous_index: Path | None) -> int:
    """The workers a snapshot against the previous one with this index gets, judged by its size
    before it is read, so they start while it is."""
    if previous_index is None:
        return 0
    try:
        size = previous_index.stat().st_size
    except OSError:
        return 0
    return worker_count(size // INDEX_BYTES_PER_FILE)
