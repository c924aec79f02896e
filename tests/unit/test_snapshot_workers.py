"""The snapshot walk's worker processes change no result: the same index, tree and counts as a
walk alone, for every kind of path; a worker that dies fails the snapshot and leaves nothing
behind; workers that cannot start leave the walk alone; workers die with their parent; and a
worker reads only the directory the walk listed, even when a symlink is swapped in for it."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from specivod.adapters.backup import snapshot, snapshot_pool, snapshot_walk
from specivod.adapters.backup.snapshot import Previous, take_snapshot
from specivod.adapters.backup.snapshot_index import read_index
from specivod.adapters.backup.snapshot_pool import WorkerPool, planned_workers, start_pool
from specivod.adapters.backup.snapshot_worker import DEFER, BatchWorker
from specivod.domain.errors import BackupError
from tests.unit.snapshot_kit import build_tree, change_files, describe, snap


@pytest.fixture(autouse=True)
def _every_directory_to_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trees here are small: without this, directories of a few files stay with the walk."""
    monkeypatch.setattr(snapshot_walk, "SMALLEST_BATCH", 1)


def rich_tree(data: Path) -> list[str]:
    """Files in nested directories, some changed after the first snapshot, plus every kind of
    path a worker leaves to the walk."""
    paths = build_tree(data, files=1500)
    (data / "links").mkdir()
    (data / "links" / "passwd").symlink_to("/etc/passwd")
    os.link(data / paths[0], data / "links" / "hard")
    os.link(data / paths[1], data / paths[2].replace(".bin", "-twin.bin"))
    os.mkfifo(data / "d4" / "a-fifo")
    (data / os.fsdecode(b"d5/caf\xe9-latin1.txt")).write_bytes(b"a name that is not UTF-8")
    (data / "d6" / "big.bin").write_bytes(os.urandom(3 << 20))
    return paths


def processes_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        status = Path(f"/proc/{pid}/stat")
        try:
            state = status.read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def test_workers_write_the_same_index_tree_and_counts_as_the_walk_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    paths = rich_tree(data)
    snap(tmp_path, "one", None, 0)
    change_files(data, paths, every=37, salt=b"release 2")
    (data / paths[40]).unlink()
    (data / "d7" / "new.bin").write_bytes(b"new in release 2")
    (data / paths[41]).chmod(0o600)
    for checksum in (False, True):
        alone = snap(tmp_path, f"alone-{checksum}", "one", 0, checksum=checksum)
        parallel = snap(tmp_path, f"parallel-{checksum}", "one", 3, checksum=checksum)
        assert parallel == alone
        assert alone.files_linked > 1400
        assert alone.hard_links == 2
        assert alone.skipped == 1
        trees = [describe(tmp_path / f"{way}-{checksum}") for way in ("parallel", "alone")]
        for tree in trees:
            del tree["."]  # the snapshot's own root: 0700, made when it was taken
        assert trees[0] == trees[1]
        assert list(read_index(tmp_path / f"parallel-{checksum}.index")) == list(
            read_index(tmp_path / f"alone-{checksum}.index")
        )
    for name in ("links/hard", paths[0]):
        assert (tmp_path / "parallel-False" / name).stat().st_ino == (
            tmp_path / "parallel-False" / paths[0]
        ).stat().st_ino


def test_the_progress_counts_every_byte_a_worker_copied(tmp_path: Path) -> None:
    data = tmp_path / "data"
    paths = build_tree(data, files=600)
    snap(tmp_path, "one", None, 0)
    change_files(data, paths, every=5, salt=b"more")
    reported: list[int] = []
    summary = take_snapshot(
        data,
        tmp_path / "two",
        tmp_path / "two.index",
        Previous(tmp_path / "one", tmp_path / "one.index"),
        done=reported.append,
        workers=2,
    )
    assert summary.files_copied == 120
    assert sum(reported) == summary.bytes_copied


def test_a_worker_that_dies_fails_the_snapshot_and_leaves_no_tree_and_no_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    build_tree(data, files=800)
    snap(tmp_path, "one", None, 0)
    pids: list[int] = []

    def start_and_kill_one(count: int, **kwargs: object) -> WorkerPool | None:
        pool = start_pool(count, **kwargs)  # type: ignore[arg-type]
        assert pool is not None
        assert not pool.wait_ready()
        pids.extend(pool.pids)
        os.kill(pids[0], signal.SIGKILL)
        return pool

    monkeypatch.setattr(snapshot, "start_pool", start_and_kill_one)
    with pytest.raises(BackupError, match="snapshot worker"):
        snap(tmp_path, "two", "one", 2)
    assert not (tmp_path / "two").exists()
    assert not (tmp_path / "two.index").exists()
    assert len(pids) == 2
    assert not processes_alive(pids)


def test_workers_that_cannot_start_leave_the_walk_to_go_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    paths = build_tree(data, files=300)
    snap(tmp_path, "one", None, 0)
    change_files(data, paths, every=10, salt=b"x")
    expected = snap(tmp_path, "alone", "one", 0)
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with caplog.at_level(logging.WARNING):
        summary = snap(tmp_path, "two", "one", 2)
    assert summary == expected
    assert "walking without worker processes" in caplog.text


def test_workers_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from specivod.adapters.backup.snapshot_pool import start_pool\n"
            f"pool = start_pool(2, source={str(tmp_path)!r}, checksum=False, tree_device=0)\n"
            "assert pool is not None and not pool.wait_ready()\n"
            "print(*pool.pids, flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout is not None
    pids = [int(pid) for pid in starter.stdout.readline().split()]
    assert len(pids) == 2
    assert processes_alive(pids) == pids
    starter.kill()
    starter.wait()
    deadline = time.monotonic() + 10
    while processes_alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not processes_alive(pids)


def _directory_descriptors(*directories: Path) -> list[int]:
    return [os.open(each, os.O_RDONLY | os.O_DIRECTORY) for each in directories]


def test_a_worker_reads_the_directory_the_walk_listed_not_a_symlink_swapped_in(
    tmp_path: Path,
) -> None:
    live, tree, outside = tmp_path / "live", tmp_path / "tree", tmp_path / "outside"
    for directory in (live / "uploads", tree, outside):
        directory.mkdir(parents=True)
    (live / "uploads" / "photo.jpg").write_bytes(b"the user's photo")
    (outside / "photo.jpg").write_bytes(b"a secret outside the data dir")
    descriptors = _directory_descriptors(live / "uploads", tree)
    (live / "uploads").rename(live / "moved")
    (live / "uploads").symlink_to(outside)
    try:
        lines, counts, copied = BatchWorker(str(live), checksum=False, tree_device=0).run(
            ("uploads", ["photo.jpg"], [None]), descriptors
        )
    finally:
        for descriptor in descriptors:
            os.close(descriptor)
    assert (tree / "photo.jpg").read_bytes() == b"the user's photo"
    assert copied == len(b"the user's photo")
    assert counts.files_copied == 1
    assert lines[0] is not None
    assert b'"p":"uploads/photo.jpg"' in lines[0]


def test_a_worker_leaves_hard_links_symlinks_and_special_files_to_the_walk(
    tmp_path: Path,
) -> None:
    live, tree = tmp_path / "live", tmp_path / "tree"
    live.mkdir()
    tree.mkdir()
    (live / "one").write_bytes(b"1")
    os.link(live / "one", live / "two")
    (live / "link").symlink_to("one")
    os.mkfifo(live / "fifo")
    (live / "plain").write_bytes(b"plain")
    (live / "sub").mkdir()
    descriptors = _directory_descriptors(live, tree)
    names = ["fifo", "gone", "link", "one", "plain", "sub", "two"]
    try:
        lines, counts, _ = BatchWorker(str(live), checksum=False, tree_device=0).run(
            (".", names, [None] * len(names)), descriptors
        )
    finally:
        for descriptor in descriptors:
            os.close(descriptor)
    assert dict(zip(names, lines, strict=True)) == {
        "fifo": DEFER,
        "gone": None,
        "link": DEFER,
        "one": DEFER,
        "plain": lines[4],
        "sub": DEFER,
        "two": DEFER,
    }
    assert lines[4] is not None
    assert lines[4].endswith(b"\n")
    assert (counts.vanished, counts.files_copied) == (1, 1)
    assert [each.name for each in tree.iterdir()] == ["plain"]


def test_an_os_error_in_a_worker_reaches_the_walk_with_its_errno(tmp_path: Path) -> None:
    live, tree = tmp_path / "live", tmp_path / "tree"
    live.mkdir()
    tree.mkdir()
    (live / "file").write_bytes(b"data")
    pool = start_pool(1, source=str(live), checksum=False, tree_device=tree.stat().st_dev)
    assert pool is not None
    descriptors = _directory_descriptors(live, tree)
    tree.rmdir()  # the copy cannot be created in a directory that is gone
    try:
        reply = pool.submit((".", ["file"], [None]), descriptors)
        error = reply.exception(timeout=30)
    finally:
        for descriptor in descriptors:
            os.close(descriptor)
        pool.close()
    assert isinstance(error, OSError)
    assert error.errno == errno.ENOENT


def test_workers_start_only_against_a_large_previous_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1, 2, 3, 4, 5, 6, 7})
    index = tmp_path / "one.index"
    assert planned_workers(None) == 0
    assert planned_workers(index) == 0  # no index
    index.write_bytes(b"x" * (snapshot_pool.PARALLEL_FROM * snapshot_pool.INDEX_BYTES_PER_FILE - 1))
    assert planned_workers(index) == 0
    index.write_bytes(b"x" * (snapshot_pool.PARALLEL_FROM * snapshot_pool.INDEX_BYTES_PER_FILE))
    assert planned_workers(index) == snapshot_pool.MAX_WORKERS
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0})
    assert planned_workers(index) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1})
    assert planned_workers(index) == 2


def test_a_first_snapshot_and_one_watched_by_seen_take_no_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []

    def counting(count: int, **kwargs: object) -> WorkerPool | None:
        started.append(count)
        return None

    monkeypatch.setattr(snapshot, "start_pool", counting)
    monkeypatch.setattr(snapshot, "planned_workers", lambda _: 2)
    build_tree(tmp_path / "data", files=50)
    snap(tmp_path, "one", None, 2)
    take_snapshot(
        tmp_path / "data",
        tmp_path / "two",
        tmp_path / "two.index",
        Previous(tmp_path / "one", tmp_path / "one.index"),
        seen=lambda _: None,
    )
    assert started == [0, 0]


def test_a_worker_channel_carries_descriptors_with_their_message() -> None:
    from specivod.adapters.backup.snapshot_worker import receive, send

    ours, theirs = socket.socketpair()
    with ours, theirs:
        reading, writing = os.pipe()
        send(ours, ("first", list(range(5000))), [reading])
        send(ours, "second")
        os.close(reading)
        message = receive(theirs, descriptors=3)
        assert message is not None
        (body, descriptors) = message
        assert body == ("first", list(range(5000)))
        assert len(descriptors) == 1
        os.write(writing, b"through the passed descriptor")
        assert os.read(descriptors[0], 100) == b"through the passed descriptor"
        os.close(descriptors[0])
        os.close(writing)
        assert receive(theirs, descriptors=3) == ("second", [])
        ours.shutdown(socket.SHUT_WR)
        assert receive(theirs) is None


def test_many_small_directories_stay_within_a_low_open_file_limit(tmp_path: Path) -> None:
    """Each batch holds its directory's descriptors until the walk settles it: a tree of many
    small directories must not run out of them (the soft limit under systemd is 1024)."""
    data = tmp_path / "data"
    for number in range(1500):
        directory = data / f"u{number % 10}" / f"upload-{number:05d}"
        directory.mkdir(parents=True)
        for part in range(20):
            (directory / f"part-{part:02d}").write_bytes(b"%d" % (number * 100 + part))
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from specivod.adapters.backup.snapshot import Previous, take_snapshot\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))\n"
        "root = Path(sys.argv[1])\n"
        "take_snapshot(root / 'data', root / 'one', root / 'one.index', None)\n"
        "two = take_snapshot(root / 'data', root / 'two', root / 'two.index',\n"
        "    Previous(root / 'one', root / 'one.index'), workers=2)\n"
        "print(two.files_linked)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["30000"]


def test_directories_of_few_files_stay_with_the_walk_and_large_ones_go_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot_walk, "SMALLEST_BATCH", 16)
    monkeypatch.setattr(snapshot_walk, "BATCH_FILES", 8)
    data = tmp_path / "data"
    for directory, count in (("few", 15), ("many", 20)):
        (data / directory).mkdir(parents=True)
        for number in range(count):
            (data / directory / f"f{number:02d}").write_bytes(b"%d" % number)
    snap(tmp_path, "one", None, 0)
    sent: list[tuple[str, int]] = []
    submit = WorkerPool.submit

    def spy(pool: WorkerPool, batch: tuple[str, list[str], list[object]], fds: list[int]) -> object:
        sent.append((batch[0], len(batch[1])))
        return submit(pool, batch, fds)  # type: ignore[arg-type]

    monkeypatch.setattr(WorkerPool, "submit", spy)
    summary = snap(tmp_path, "two", "one", 2)
    assert sent == [("many", 8), ("many", 8), ("many", 4)]
    assert summary.files_linked == 35


def test_a_worker_never_imports_code_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m`` puts the current directory first on sys.path: a ``specivod`` package there
    (an operator running the CLI from /tmp) would run as root in the worker."""
    planted = tmp_path / "specivod" / "adapters" / "backup"
    planted.mkdir(parents=True)
    for package in (tmp_path / "specivod", tmp_path / "specivod" / "adapters", planted):
        (package / "__init__.py").write_text("")
    marker = tmp_path / "planted-code-ran"
    (planted / "snapshot_worker.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    live = tmp_path / "live"
    live.mkdir()
    pool = start_pool(1, source=str(live), checksum=False, tree_device=0)
    assert pool is not None
    try:
        assert pool.wait_ready() == ""
    finally:
        pool.close()
    assert not marker.exists()
