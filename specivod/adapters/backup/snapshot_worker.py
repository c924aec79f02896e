"""A worker process of a snapshot walk (``snapshot_pool`` starts it): for batches of names in
one directory, links each unchanged regular file from the previous snapshot or copies it, and
answers with the index lines in the batch's order.

Rule: a worker only handles regular files with one link. Anything else (hard links inside the
data dir, symlinks, what turned into a directory or a device) it leaves to the walk, which keeps
the order and the inode map. The directories come as open descriptors sent by the walk, so the
worker reads exactly the directory the walk listed and never follows a symlink swapped in. It
dies with the process that started it.

Run by the pool, which calls ``main([PARENT_PID, FD])`` in a new interpreter.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import socket
import stat
import struct
from typing import Any

from specivod.adapters.backup.copying import Copier, child
from specivod.adapters.backup.snapshot_file import (
    GONE,
    Counts,
    Place,
    copy_file,
    link_from_previous,
)
from specivod.adapters.backup.snapshot_index import KnownFile, encoded

DEFER = b""
"""In a reply: this name is the walk's to visit (never an index line, which ends in a newline)."""
_HEADER = struct.Struct("!I")
_PR_SET_PDEATHSIG = 1

Batch = tuple[str, list[str], list[KnownFile | None]]
"""A directory's relative path, names in it, and what the previous snapshot knew of each."""
Reply = tuple[list[bytes | None], Counts, int]
"""Per name: its index line, None (vanished, counted) or ``DEFER``; the counts; bytes copied."""


def send(channel: socket.socket, message: Any, descriptors: list[int] | None = None) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    header = _HEADER.pack(len(payload))
    if descriptors:
        socket.send_fds(channel, [header], descriptors)
    else:
        channel.sendall(header)
    channel.sendall(payload)


def receive(channel: socket.socket, *, descriptors: int = 0) -> tuple[Any, list[int]] | None:
    """The next message and the descriptors sent with it; None at the end of the stream."""
    if descriptors:
        header, received, flags, _ = socket.recv_fds(channel, _HEADER.size, descriptors)
        if flags & socket.MSG_CTRUNC:
            for descriptor in received:
                os.close(descriptor)
            raise OSError("a snapshot worker got fewer directory descriptors than were sent")
    else:
        header, received = channel.recv(_HEADER.size), []
    if not header:
        return None
    header += _exactly(channel, _HEADER.size - len(header))
    (length,) = _HEADER.unpack(header)
    return pickle.loads(_exactly(channel, length)), received  # noqa: S301 - our own child


def _exactly(channel: socket.socket, length: int) -> bytes:
    chunks = []
    while length:
        chunk = channel.recv(min(length, 1 << 20))
        if not chunk:
            raise EOFError("the other end of a snapshot worker's channel closed mid-message")
        chunks.append(chunk)
        length -= len(chunk)
    return b"".join(chunks)


class BatchWorker:
    def __init__(self, source: str, *, checksum: bool, tree_device: int) -> None:
        self._source = source
        self._checksum = checksum
        self._tree_device = tree_device
        self._copier = Copier()

    def run(self, batch: Batch, directories: list[int]) -> Reply:
        directory, names, knowns = batch
        live, tree = directories[0], directories[1]
        previous = directories[2] if len(directories) > 2 else None
        counts = Counts()
        copied = [0]

        def done(amount: int) -> None:
            copied[0] += amount

        lines: list[bytes | None] = []
        for name, known in zip(names, knowns, strict=True):
            path = child(directory, name)
            try:
                status = os.lstat(name, dir_fd=live)
            except GONE:
                counts.vanished += 1
                lines.append(None)
                continue
            if not stat.S_ISREG(status.st_mode) or status.st_nlink > 1:
                lines.append(DEFER)
                continue
            checksum_of = f"{self._source}/{path}" if self._checksum else None
            linked = link_from_previous(
                path,
                name,
                status,
                known,
                (live, tree, previous),
                checksum_of=checksum_of,
                counts=counts,
            )
            if isinstance(linked, bytes):
                lines.append(linked)
                continue
            result = copy_file(
                path,
                Place(name, name, live, tree),
                self._copier,
                done=done,
                tree_device=self._tree_device,
            )
            entry = counts.count_copy(result)
            lines.append(None if entry is None else encoded(entry))
        return lines, counts, copied[0]


def _die_with(parent: int) -> None:
    """SIGKILL when the process that started this one ends (also if it has already)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def main(arguments: list[str]) -> int:
    parent, descriptor = int(arguments[0]), int(arguments[1])
    _die_with(parent)
    channel = socket.socket(fileno=descriptor)
    start = receive(channel)
    if start is None:
        return 0
    source, checksum, tree_device = start[0]
    worker = BatchWorker(source, checksum=checksum, tree_device=tree_device)
    send(channel, ("ready", os.getpid()))
    while (message := receive(channel, descriptors=3)) is not None:
        batch, directories = message
        try:
            reply: tuple[Any, ...] = ("ok", worker.run(batch, directories))
        except OSError as error:
            reply = ("oserror", error.errno, error.strerror, error.filename)
        except Exception as error:
            reply = ("error", f"{type(error).__name__}: {error}")
        finally:
            for each in directories:
                os.close(each)
        send(channel, reply)
    return 0
