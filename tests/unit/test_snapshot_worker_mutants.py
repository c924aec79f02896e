"""The rules of one snapshot file, pinned where mutation testing found them loose: a file is
linked from the previous snapshot only when every recorded field still matches (never from the
live data dir), a link or copy is counted exactly, a file that changes while copied is copied
again and flagged after the last attempt, a worker checksums only when asked, and the worker
channel frames messages whatever sizes the socket delivers them in."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from specivod.adapters.backup import snapshot, snapshot_walk, snapshot_worker
from specivod.adapters.backup.copying import Copied
from specivod.adapters.backup.files import BytesDone
from specivod.adapters.backup.snapshot import Previous, SnapshotSummary, take_snapshot
from specivod.adapters.backup.snapshot_file import (
    ATTEMPTS,
    Copy,
    Counts,
    Place,
    copy_file,
    link_from_previous,
)
from specivod.adapters.backup.snapshot_index import Entry, KnownFile, encoded, read_index
from specivod.adapters.backup.snapshot_pool import WorkerPool
from specivod.adapters.backup.snapshot_worker import Batch, BatchWorker, Reply, receive, send
from specivod.domain.errors import BackupError

CONTENT = b"the live file's content\n" * 40
MODE = 0o640


@dataclass
class Trees:
    """A live directory with one file ``f``, the previous snapshot's copy of it, and an empty
    new tree, each also open as a directory descriptor."""

    live: Path
    tree: Path
    previous: Path
    fds: tuple[int, int, int]

    @property
    def status(self) -> os.stat_result:
        return os.lstat(self.live / "f")

    def known(self, sha256: str | None = None) -> KnownFile:
        status = self.status
        digest = sha256 or hashlib.sha256(CONTENT).hexdigest()
        return (status.st_size, status.st_mtime_ns, status.st_ino, status.st_ctime_ns, digest)


@pytest.fixture
def trees(tmp_path: Path) -> Iterator[Trees]:
    live, tree, previous = tmp_path / "live", tmp_path / "tree", tmp_path / "previous"
    for directory in (live, tree, previous):
        directory.mkdir()
    (live / "f").write_bytes(CONTENT)
    (live / "f").chmod(MODE)
    os.utime(live / "f", ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    shutil.copy2(live / "f", previous / "f")
    fds = tuple(os.open(each, os.O_RDONLY | os.O_DIRECTORY) for each in (live, tree, previous))
    yield Trees(live, tree, previous, (fds[0], fds[1], fds[2]))
    for descriptor in fds:
        os.close(descriptor)


def names(directory: Path) -> list[str]:
    return sorted(each.name for each in directory.iterdir())


def expected_entry(trees: Trees, path: str, sha256: str | None = None) -> Entry:
    size, mtime_ns, inode, ctime_ns, digest = trees.known(sha256)
    status = trees.status
    return Entry(
        path, "file", MODE, status.st_uid, status.st_gid, mtime_ns, size, digest, None, inode,
        ctime_ns,
    )  # fmt: skip


def link(trees: Trees, known: KnownFile | None, counts: Counts, **kwargs: object) -> object:
    return link_from_previous(
        "sub/f",
        "f",
        trees.status,
        known,
        trees.fds,
        checksum_of=kwargs.get("checksum_of"),  # type: ignore[arg-type]
        counts=counts,
    )


def test_an_unchanged_file_is_linked_to_the_previous_copy_never_to_the_live_file(
    trees: Trees,
) -> None:
    counts = Counts(files=5, bytes_total=100, files_linked=2, bytes_linked=50)
    line = link(trees, trees.known(), counts)
    assert line == encoded(expected_entry(trees, "sub/f"))
    linked = os.lstat(trees.tree / "f")
    assert linked.st_ino == os.lstat(trees.previous / "f").st_ino
    assert linked.st_ino != trees.status.st_ino
    assert trees.status.st_nlink == 1
    size = len(CONTENT)
    assert (counts.files, counts.bytes_total, counts.files_linked, counts.bytes_linked) == (
        6,
        100 + size,
        3,
        50 + size,
    )
    assert (counts.files_copied, counts.bytes_copied) == (0, 0)


@pytest.mark.parametrize("field", ["size", "mtime", "inode", "ctime"])
def test_a_file_whose_recorded_field_differs_is_not_linked(trees: Trees, field: str) -> None:
    size, mtime_ns, inode, ctime_ns, sha256 = trees.known()
    changed = {
        "size": (size + 1, mtime_ns, inode, ctime_ns, sha256),
        "mtime": (size, mtime_ns + 1, inode, ctime_ns, sha256),
        "inode": (size, mtime_ns, inode + 1, ctime_ns, sha256),
        "ctime": (size, mtime_ns, inode, ctime_ns + 1, sha256),
    }[field]
    counts = Counts()
    assert link(trees, changed, counts) is None
    assert not (trees.tree / "f").exists()
    assert counts == Counts()


def test_a_file_unknown_to_or_missing_from_the_previous_snapshot_is_not_linked(
    trees: Trees,
) -> None:
    assert link(trees, None, Counts()) is None
    assert link_from_previous(
        "f", "f", trees.status, trees.known(), (trees.fds[0], trees.fds[1], None),
        checksum_of=None, counts=Counts(),
    ) is None  # fmt: skip
    (trees.previous / "f").unlink()
    assert link(trees, trees.known(), Counts()) is None
    assert not (trees.tree / "f").exists()


def test_a_previous_copy_chmoded_since_is_not_linked(trees: Trees) -> None:
    (trees.previous / "f").chmod(0o600)
    assert link(trees, trees.known(), Counts()) is None
    assert not (trees.tree / "f").exists()


def test_with_checksums_a_file_whose_content_differs_from_the_record_is_not_linked(
    trees: Trees,
) -> None:
    wrong = "0" * 64
    live = str(trees.live / "f")
    assert link(trees, trees.known(wrong), Counts(), checksum_of=live) is None
    assert not (trees.tree / "f").exists()
    assert link(trees, trees.known(), Counts(), checksum_of=live) is not None
    (trees.tree / "f").unlink()
    assert link(trees, trees.known(wrong), Counts()) == encoded(
        expected_entry(trees, "sub/f", wrong)
    )  # without checksums the recorded metadata is trusted


def test_a_file_with_other_links_in_the_data_dir_is_linked_with_its_entry(trees: Trees) -> None:
    os.link(trees.live / "f", trees.live / "other-name")
    counts = Counts()
    entry = link(trees, trees.known(), counts)
    assert entry == expected_entry(trees, "sub/f")
    assert os.lstat(trees.tree / "f").st_ino == os.lstat(trees.previous / "f").st_ino
    assert counts.files_linked == 1


def test_a_link_refused_for_want_of_a_shared_filesystem_is_a_copy_and_any_other_an_error(
    trees: Trees,
) -> None:
    (trees.tree / "f").write_bytes(b"already there")
    with pytest.raises(FileExistsError):
        link(trees, trees.known(), Counts())
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == trees.tree.stat().st_dev:
        return
    with tempfile.TemporaryDirectory(dir=shm) as elsewhere:
        descriptor = os.open(elsewhere, os.O_RDONLY | os.O_DIRECTORY)
        try:
            counts = Counts()
            assert link_from_previous(
                "f", "f", trees.status, trees.known(), (trees.fds[0], descriptor, trees.fds[2]),
                checksum_of=None, counts=counts,
            ) is None  # fmt: skip
            assert counts == Counts()
        finally:
            os.close(descriptor)


class ChangingCopier:
    """Copies the whole source like ``Copier``; during the first ``changes`` copies the live file
    grows by a line after it was read, as a file written meanwhile does."""

    def __init__(self, live: Path, changes: int, *, reflinked: bool = False) -> None:
        self.live = live
        self.changes = changes
        self.reflinked = reflinked
        self.devices: list[int | None] = []
        self.modes_while_copied: list[int] = []

    def copy(
        self,
        source: int,
        target: int,
        source_status: os.stat_result,
        done: BytesDone | None,
        *,
        target_device: int | None = None,
    ) -> Copied:
        self.devices.append(target_device)
        self.modes_while_copied.append(os.fstat(target).st_mode & 0o7777)
        data = os.pread(source, source_status.st_size, 0)
        os.write(target, data)
        if done is not None:
            done(len(data))
        if self.changes > 0:
            self.changes -= 1
            with self.live.open("ab") as stream:
                stream.write(b"written while copied\n")
        return Copied(len(data), hashlib.sha256(data).hexdigest(), reflinked=self.reflinked)


def copy(trees: Trees, copier: ChangingCopier, done: list[int]) -> Copy:
    return copy_file(
        "sub/f",
        Place("f", "f", trees.fds[0], trees.fds[1]),
        copier,  # type: ignore[arg-type]
        done=done.append,
        tree_device=4242,
    )


def test_a_steady_file_is_copied_once_with_its_metadata_and_entry(trees: Trees) -> None:
    copier = ChangingCopier(trees.live / "f", changes=0, reflinked=True)
    done: list[int] = []
    result = copy(trees, copier, done)
    status = trees.status
    assert result == Copy(
        Entry(
            "sub/f", "file", MODE, status.st_uid, status.st_gid, status.st_mtime_ns,
            len(CONTENT), hashlib.sha256(CONTENT).hexdigest(), None, status.st_ino,
            status.st_ctime_ns,
        ),
        changed=False,
        flagged=False,
        reflinked=True,
    )  # fmt: skip
    copied = os.lstat(trees.tree / "f")
    assert (copied.st_mode & 0o7777, copied.st_mtime_ns) == (MODE, status.st_mtime_ns)
    assert (trees.tree / "f").read_bytes() == CONTENT
    assert copier.devices == [4242]
    assert copier.modes_while_copied == [0o600]
    assert done == [len(CONTENT)]


def test_a_file_that_changed_while_copied_is_copied_again(trees: Trees) -> None:
    copier = ChangingCopier(trees.live / "f", changes=1)
    result = copy(trees, copier, [])
    assert len(copier.devices) == 2
    assert (result.changed, result.flagged) == (True, False)
    final = (trees.live / "f").read_bytes()
    assert (trees.tree / "f").read_bytes() == final
    assert result.entry is not None
    assert result.entry.size == len(final)
    assert os.lstat(trees.tree / "f").st_mtime_ns == trees.status.st_mtime_ns


def test_a_file_that_keeps_changing_is_copied_three_times_then_kept_and_flagged(
    trees: Trees,
) -> None:
    copier = ChangingCopier(trees.live / "f", changes=99)
    result = copy(trees, copier, [])
    assert len(copier.devices) == ATTEMPTS == 3
    assert (result.changed, result.flagged) == (True, True)
    assert os.lstat(trees.tree / "f").st_mode & 0o7777 == MODE
    assert names(trees.tree) == ["f"]


def test_a_live_name_gone_replaced_by_a_symlink_or_a_directory_is_not_copied(
    trees: Trees,
) -> None:
    (trees.live / "elsewhere").write_bytes(b"not the data dir's file")
    (trees.live / "link").symlink_to("elsewhere")
    (trees.live / "dir").mkdir()
    for name in ("gone", "link", "dir"):
        copier = ChangingCopier(trees.live / name, changes=0)
        result = copy_file(
            name, Place(name, name, trees.fds[0], trees.fds[1]), copier,  # type: ignore[arg-type]
            done=None, tree_device=0,
        )  # fmt: skip
        assert result == Copy(None), name
        assert copier.devices == [], name
    assert names(trees.tree) == []


def test_a_copy_never_writes_into_a_name_that_exists_in_the_new_tree(trees: Trees) -> None:
    (trees.tree / "f").write_bytes(b"someone else's file")
    with pytest.raises(FileExistsError):
        copy(trees, ChangingCopier(trees.live / "f", changes=0), [])
    assert (trees.tree / "f").read_bytes() == b"someone else's file"


def test_counts_add_up_copies_vanished_files_and_other_counts() -> None:
    counts = Counts(files=10, bytes_total=1000, files_copied=4, bytes_copied=400, reflinked=1)
    counts.changed, counts.flagged, counts.vanished = 2, 1, 3
    counts.flagged_paths.append("earlier")
    entry = Entry("a/b", "file", 0o644, 0, 0, 1, size=70, sha256="0" * 64)
    assert counts.count_copy(Copy(entry, changed=True, flagged=True, reflinked=True)) == entry
    assert counts.count_copy(Copy(None)) is None
    assert counts == Counts(
        files=11, bytes_total=1070, files_copied=5, bytes_copied=470, reflinked=2, changed=3,
        flagged=2, vanished=4, flagged_paths=["earlier", "a/b"],
    )  # fmt: skip
    other = Counts(files=1, bytes_total=2, symlinks=3, vanished=5, flagged_paths=["x"])
    counts.add(other)
    assert (counts.files, counts.bytes_total, counts.symlinks, counts.vanished) == (12, 1072, 3, 9)
    assert counts.flagged_paths == ["earlier", "a/b", "x"]
    assert other == Counts(files=1, bytes_total=2, symlinks=3, vanished=5, flagged_paths=["x"])


@pytest.mark.parametrize("checksum", [True, False])
def test_a_worker_checksums_the_live_file_only_when_asked(trees: Trees, checksum: bool) -> None:
    worker = BatchWorker(str(trees.live), checksum=checksum, tree_device=0)
    wrong = trees.known("0" * 64)
    lines, counts, copied = worker.run((".", ["f"], [wrong]), list(trees.fds))
    if checksum:
        assert (counts.files_copied, counts.files_linked, copied) == (1, 0, len(CONTENT))
        assert os.lstat(trees.tree / "f").st_ino != os.lstat(trees.previous / "f").st_ino
    else:
        assert (counts.files_copied, counts.files_linked, copied) == (0, 1, 0)
        assert lines == [encoded(expected_entry(trees, "f", "0" * 64))]


def test_a_worker_answers_each_name_in_order_and_counts_every_vanished_one(trees: Trees) -> None:
    (trees.live / "g").write_bytes(b"new since the previous snapshot")
    worker = BatchWorker(str(trees.live), checksum=False, tree_device=0)
    batch = (".", ["gone-1", "f", "g", "gone-2"], [None, trees.known(), None, None])
    lines, counts, copied = worker.run(batch, list(trees.fds))
    new = os.lstat(trees.live / "g")
    copy_entry = Entry(
        "g", "file", new.st_mode & 0o7777, new.st_uid, new.st_gid, new.st_mtime_ns, new.st_size,
        hashlib.sha256(b"new since the previous snapshot").hexdigest(), None, new.st_ino,
        new.st_ctime_ns,
    )  # fmt: skip
    assert lines == [None, encoded(expected_entry(trees, "f")), encoded(copy_entry), None]
    assert (counts.vanished, counts.files_linked, counts.files_copied) == (2, 1, 1)
    assert copied == new.st_size


def test_a_file_gone_between_a_workers_stat_and_its_copy_is_answered_as_vanished(
    trees: Trees, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = copy_file

    def gone_first(path: str, place: Place, *args: Any, **kwargs: Any) -> Copy:
        (trees.live / place.live).unlink()
        return real(path, place, *args, **kwargs)

    monkeypatch.setattr(snapshot_worker, "copy_file", gone_first)
    worker = BatchWorker(str(trees.live), checksum=False, tree_device=0)
    lines, counts, copied = worker.run((".", ["f"], [None]), list(trees.fds))
    assert lines == [None]
    assert (counts.vanished, counts.files, counts.files_copied, copied) == (1, 0, 0, 0)
    assert names(trees.tree) == []


class DribblingSocket:
    """A channel end that hands out at most ``step`` bytes per ``recv``, as a stream socket
    may."""

    def __init__(self, channel: socket.socket, step: int) -> None:
        self.channel = channel
        self.step = step

    def recv(self, size: int) -> bytes:
        return self.channel.recv(min(size, self.step))


def test_the_channel_reassembles_a_message_delivered_a_byte_at_a_time() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        send(ours, {"batch": "x" * 300})
        send(ours, "next")
        slow = DribblingSocket(theirs, 1)
        assert receive(slow) == ({"batch": "x" * 300}, [])  # type: ignore[arg-type]
        assert receive(slow) == ("next", [])  # type: ignore[arg-type]


def test_the_channel_carries_a_message_larger_than_a_read() -> None:
    ours, theirs = socket.socketpair()
    big = os.urandom(3 << 20)
    with ours, theirs:
        sender = threading.Thread(target=send, args=(ours, big))
        sender.start()
        assert receive(theirs) == (big, [])
        sender.join()


def test_a_channel_closed_mid_message_is_an_error_and_extra_descriptors_are_refused() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(b"\x00\x00\x00\x10short")
        ours.shutdown(socket.SHUT_WR)
        with pytest.raises(
            EOFError, match=r"^the other end of a snapshot worker.s channel closed mid-message$"
        ):
            receive(theirs)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        pipes = [os.pipe() for _ in range(2)]
        send(ours, "four", [end for pipe in pipes for end in pipe])
        before = names(Path("/proc/self/fd"))
        with pytest.raises(
            OSError, match=r"^a snapshot worker got fewer directory descriptors than were sent$"
        ):
            receive(theirs, descriptors=3)
        assert names(Path("/proc/self/fd")) == before
        for pipe in pipes:
            for end in pipe:
                os.close(end)


class InProcessPool(WorkerPool):
    """A worker pool whose one worker runs each batch at once in this process, after
    ``meanwhile`` (what changes in the data dir between the walk's listing and the worker)."""

    def __init__(self, source: Path, meanwhile: Callable[[], None] = lambda: None) -> None:
        super().__init__(0, source=str(source), checksum=False, tree_device=0)
        self.worker = BatchWorker(str(source), checksum=False, tree_device=0)
        self.meanwhile = meanwhile
        self.batches: list[tuple[str, list[str]]] = []
        self.closed: list[bool] = []

    def submit(self, batch: Batch, directories: list[int]) -> Future[Reply]:
        self.batches.append((batch[0], list(batch[1])))
        reply: Future[Reply] = Future()
        try:
            self.meanwhile()
            reply.set_result(self.worker.run(batch, directories))
        except Exception as error:
            reply.set_exception(error)
        return reply

    def close(self, *, kill: bool = False) -> None:
        self.closed.append(kill)


def snapshot_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: InProcessPool
) -> SnapshotSummary:
    take_snapshot(tmp_path / "data", tmp_path / "one", tmp_path / "one.index", None)
    monkeypatch.setattr(snapshot, "start_pool", lambda count, **_: pool)
    return take_snapshot(
        tmp_path / "data",
        tmp_path / "two",
        tmp_path / "two.index",
        Previous(tmp_path / "one", tmp_path / "one.index"),
        workers=1,
    )


def data_dir(tmp_path: Path, files: int) -> Path:
    data = tmp_path / "data" / "d"
    data.mkdir(parents=True)
    for number in range(files):
        (data / f"f{number:02d}").write_bytes(b"%d" % number)
    return data


def test_a_file_gone_before_its_worker_reached_it_is_counted_as_vanished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot_walk, "SMALLEST_BATCH", 1)
    data = data_dir(tmp_path, 3)
    pool = InProcessPool(tmp_path / "data", lambda: (data / "f01").unlink(missing_ok=True))
    summary = snapshot_with(tmp_path, monkeypatch, pool)
    assert (summary.vanished, summary.files_linked, summary.files) == (1, 2, 2)
    assert [entry.path for entry in read_index(tmp_path / "two.index")] == [
        ".",
        "d",
        "d/f00",
        "d/f02",
    ]
    assert pool.batches == [("d", ["f00", "f01", "f02"])]
    assert pool.closed == [False]


def test_a_file_that_became_a_directory_before_its_worker_reached_it_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot_walk, "SMALLEST_BATCH", 1)
    data = data_dir(tmp_path, 3)

    def to_directory() -> None:
        if (data / "f01").is_file():
            (data / "f01").unlink()
            (data / "f01").mkdir()
            (data / "f01" / "inside").write_bytes(b"never walked")

    summary = snapshot_with(tmp_path, monkeypatch, InProcessPool(tmp_path / "data", to_directory))
    assert (summary.vanished, summary.files_linked, summary.directories) == (1, 2, 2)
    assert [entry.path for entry in read_index(tmp_path / "two.index")] == [
        ".",
        "d",
        "d/f00",
        "d/f02",
    ]
    assert names(tmp_path / "two" / "d") == ["f00", "f02"]


def test_a_worker_error_fails_the_walk_and_stops_the_workers_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot_walk, "SMALLEST_BATCH", 1)
    data_dir(tmp_path, 3)

    def failing() -> None:
        raise OSError(5, "the disk failed under the worker")

    pool = InProcessPool(tmp_path / "data", failing)
    with pytest.raises((OSError, BackupError)):
        snapshot_with(tmp_path, monkeypatch, pool)
    assert pool.closed == [True]
    assert not (tmp_path / "two").exists()


def test_a_directory_of_exactly_the_smallest_batch_goes_to_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot_walk, "BATCH_FILES", 3)
    data = data_dir(tmp_path, snapshot_walk.SMALLEST_BATCH - 3)
    (data / "sub-a").mkdir()
    (data / "sub-a" / "inner").write_bytes(b"a lone file stays with the walk")
    for name in ("f01-sub", "zz-sub"):
        (data / name).mkdir()
    for name in ("f00b", "f05b", "zz"):
        (data / name).write_bytes(b"three more files")
    pool = InProcessPool(tmp_path / "data")
    summary = snapshot_with(tmp_path, monkeypatch, pool)
    files = sorted(each.name for each in data.iterdir() if each.is_file())
    assert len(files) == snapshot_walk.SMALLEST_BATCH
    assert pool.batches == [("d", files[start : start + 3]) for start in range(0, len(files), 3)]
    assert summary.files_linked == len(files) + 1
    assert pool.closed == [False]


class WalkStopped(Exception):
    pass


def test_a_failed_walk_waits_for_the_copies_under_way_and_drops_those_not_started(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for number in range(200):
        (data / f"f{number:03d}").write_bytes(b"%d" % number)
    copies: list[int] = []

    def slow_progress(amount: int) -> None:
        time.sleep(0.1)  # copies lag far behind the walk: most are still queued at f150
        copies.append(amount)

    def stop_at_150(path: Path) -> None:
        if path.name == "f150":
            raise WalkStopped

    with pytest.raises(WalkStopped):
        take_snapshot(
            data, tmp_path / "one", tmp_path / "one.index", None, done=slow_progress,
            seen=stop_at_150,
        )  # fmt: skip
    running = [each.name for each in threading.enumerate() if each.name.startswith("snapshot-copy")]
    assert running == []
    ended = len(copies)
    time.sleep(0.2)
    assert len(copies) == ended
    assert ended < 100
    assert not (tmp_path / "one").exists()
