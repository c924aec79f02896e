"""Attacks on the snapshot walk's worker processes (``snapshot_pool``, ``snapshot_worker``): the
rule is that workers change no result (same index, tree and counts as the walk alone) and add no
way for anything outside specivod to act. Each test here was a sequence that broke it (found
as a strict xfail, kept as a regression test once fixed). U3, a name listed as a file that is a
directory by its turn, is left out on purpose: see ``snapshot_walk``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from specivod.adapters.backup import snapshot_walk
from specivod.adapters.backup.datasync import sync_from_snapshot
from specivod.adapters.backup.files import sha256_of
from specivod.adapters.backup.snapshot import (
    check_snapshot,
)
from specivod.adapters.backup.snapshot_index import read_index
from specivod.domain.errors import BackupError
from tests.unit.snapshot_kit import describe, snap


@pytest.fixture
def busy_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's reply is not there yet when the walk looks (a loaded machine, a big batch):
    the walk settles a worker's names only when its window is full or the walk is over."""
    ready = snapshot_walk._ready

    def not_before_the_end(item: snapshot_walk.Pending) -> bool:
        return type(item) is not snapshot_walk._Slot and ready(item)

    monkeypatch.setattr(snapshot_walk, "_ready", not_before_the_end)


def hard_link_into_a_small_directory(data: Path) -> None:
    """``d`` is large enough for the workers; its first file has a second name in ``d/b-sub``,
    a directory of one file, which the walk visits itself."""
    (data / "d" / "b-sub").mkdir(parents=True)
    (data / "d" / "a-link").write_bytes(b"two names, one inode")
    os.link(data / "d" / "a-link", data / "d" / "b-sub" / "x")
    for number in range(snapshot_walk.SMALLEST_BATCH + 4):
        (data / "d" / f"c{number:02d}").write_bytes(b"%d" % number)


@pytest.mark.usefixtures("busy_workers")
def test_u1_a_hard_link_first_met_by_a_worker_keeps_the_index_of_the_walk_alone(
    tmp_path: Path,
) -> None:
    """U1, fixed in 140c590: an inode's first name was a worker's, its link_of pointed ahead."""
    hard_link_into_a_small_directory(tmp_path / "data")
    snap(tmp_path, "one", None, 0)
    snap(tmp_path, "alone", "one", 0)
    snap(tmp_path, "parallel", "one", 2)
    alone = [(e.path, e.link_of) for e in read_index(tmp_path / "alone.index")]
    assert ("d/b-sub/x", "d/a-link") in alone
    assert [(e.path, e.link_of) for e in read_index(tmp_path / "parallel.index")] == alone


@pytest.mark.usefixtures("busy_workers")
def test_u1_a_snapshot_taken_with_workers_and_hard_links_restores_into_an_empty_data_dir(
    tmp_path: Path,
) -> None:
    """U1, fixed in 140c590: an inode's first name was a worker's, its link_of pointed ahead."""
    data = tmp_path / "data"
    hard_link_into_a_small_directory(data)
    snap(tmp_path, "one", None, 0)
    two = snap(tmp_path, "two", "one", 2)
    check_snapshot(
        tmp_path / "two", tmp_path / "two.index", two.index_sha256, read_files=True
    )  # accepted: every entry is there with its size and sha256
    assert two.index_sha256 == sha256_of(tmp_path / "two.index")
    restored = tmp_path / "restored"
    try:
        sync_from_snapshot(
            tmp_path / "two", tmp_path / "two.index", restored, tmp_path / "restored-aside"
        )
    except BackupError as error:
        pytest.fail(f"the accepted snapshot cannot be restored: {error}")
    expected, actual = describe(data), describe(restored)
    del expected["."], actual["."]
    assert actual == expected


def test_u2_a_worker_imports_nothing_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """U2, fixed in 51e1a5d (python -P): a stdlib name (pickle.py) planted in the working
    directory used to run in every worker, as the user taking the backup."""
    monkeypatch.setattr(snapshot_walk, "SMALLEST_BATCH", 1)
    data = tmp_path / "data"
    data.mkdir()
    for number in range(20):
        (data / f"f{number:02d}").write_bytes(b"%d" % number)
    snap(tmp_path, "one", None, 0)
    marker = tmp_path / "ran"
    here = tmp_path / "operator-cwd"  # e.g. the compose directory, or the data dir itself
    here.mkdir()
    (here / "pickle.py").write_text(
        f"open({str(marker)!r}, 'a').write('code from the working directory ran\\n')\n"
        "raise ImportError('planted')\n"
    )
    monkeypatch.chdir(here)
    two = snap(tmp_path, "two", "one", 2)
    assert two.files_linked == 20
    assert not marker.exists(), marker.read_text()


@pytest.mark.usefixtures("busy_workers")
def test_u1_a_rollback_over_a_release_that_replaced_a_hard_linked_file_brings_the_snapshot_back(
    tmp_path: Path,
) -> None:
    """U1, fixed in 140c590: an inode's first name was a worker's, its link_of pointed ahead."""
    data = tmp_path / "data"
    hard_link_into_a_small_directory(data)
    snap(tmp_path, "one", None, 0)
    snap(tmp_path, "two", "one", 2)
    before = describe(data)
    release = data / "d" / "b-sub" / "written-by-the-release"
    release.write_bytes(b"what the failed release wrote")
    release.rename(data / "d" / "b-sub" / "x")  # an atomic replace: a new inode
    sync_from_snapshot(tmp_path / "two", tmp_path / "two.index", data, tmp_path / "aside")
    assert (data / "d" / "a-link").read_bytes() == b"two names, one inode"
    after = describe(data)
    del before["."], after["."]
    assert after == before


def test_u4_a_deep_tree_snapshots_with_workers_wherever_it_does_without(tmp_path: Path) -> None:
    """U4, fixed in 140c590: each level of a deep tree held six descriptors with workers."""
    level = tmp_path / "data"
    for _ in range(60):
        level.mkdir(parents=True)
        for number in range(8):  # files on both sides of the subdirectory "m", 16 in all
            (level / f"a{number}").write_bytes(b"a%d" % number)
            (level / f"z{number}").write_bytes(b"z%d" % number)
        level = level / "m"
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from specivod.adapters.backup.snapshot import Previous, take_snapshot\n"
        "root = Path(sys.argv[1])\n"
        "take_snapshot(root / 'data', root / 'one', root / 'one.index', None)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))\n"
        "previous = Previous(root / 'one', root / 'one.index')\n"
        "for workers in (0, 2):\n"
        "    name = f'with-{workers}'\n"
        "    summary = take_snapshot(root / 'data', root / name, root / f'{name}.index',\n"
        "        previous, workers=workers)\n"
        "    print(workers, summary.files_linked, flush=True)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.stdout.split("\n")[0] == "0 960", result.stderr[-2000:]  # the walk alone
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["0", "960", "2", "960"]


def test_u5_ctrl_c_at_the_terminal_does_not_cut_a_snapshot_taken_with_workers(
    tmp_path: Path,
) -> None:
    """U5, fixed in ae97f23: workers shared the caller's process group."""
    data = tmp_path / "data"
    data.mkdir()
    for number in range(40):
        (data / f"f{number:02d}").write_bytes(b"%d" % number)
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from specivod.adapters.backup import snapshot, snapshot_walk\n"
        "from specivod.adapters.backup.snapshot import Previous, take_snapshot\n"
        "from specivod.adapters.backup.snapshot_pool import start_pool\n"
        "snapshot_walk.SMALLEST_BATCH = 1\n"
        "asked = []\n"
        "# the CLI's stop_on_signals: SIGINT asks the engine to stop at the next step boundary\n"
        "signal.signal(signal.SIGINT, lambda number, frame: asked.append(number))\n"
        "root = Path(sys.argv[1])\n"
        "take_snapshot(root / 'data', root / 'one', root / 'one.index', None)\n"
        "def started_then_ctrl_c(count, **kwargs):\n"
        "    pool = start_pool(count, **kwargs)\n"
        "    assert pool is not None and not pool.wait_ready()\n"
        "    os.killpg(0, signal.SIGINT)  # a terminal's Ctrl-C: the foreground process group\n"
        "    return pool\n"
        "snapshot.start_pool = started_then_ctrl_c\n"
        "two = take_snapshot(root / 'data', root / 'two', root / 'two.index',\n"
        "    Previous(root / 'one', root / 'one.index'), workers=2)\n"
        "print(len(asked), two.files_linked)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        start_new_session=True,  # its own process group: the SIGINT reaches no one else
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1", "40"]


def worker_children() -> list[int]:
    """Live snapshot workers this process started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if (
            fields.get("PPid", "").strip() == str(os.getpid())
            and not fields.get("State", "").startswith("Z")
            and b"snapshot_worker" in command
        ):
            found.append(int(entry.name))
    return found


def test_u6_a_reader_thread_that_cannot_start_leaves_the_walk_alone_and_no_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot_walk, "SMALLEST_BATCH", 1)
    data = tmp_path / "data"
    data.mkdir()
    for number in range(20):
        (data / f"f{number:02d}").write_bytes(b"%d" % number)
    snap(tmp_path, "one", None, 0)
    alone = snap(tmp_path, "alone", "one", 0)
    start = threading.Thread.start

    def no_reader_thread(thread: threading.Thread) -> None:
        if thread.name == "snapshot-worker-reader":
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", no_reader_thread)
    try:
        summary = snap(tmp_path, "two", "one", 2)
    finally:
        monkeypatch.undo()
        left = worker_children()
        for pid in left:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert summary == alone
    assert left == []
