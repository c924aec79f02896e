"""A notification never blocks the event loop: when the supervisor does not read its socket
(a full queue), messages are dropped instead of stopping the daemon's main loop."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from specivod.daemon.notify import Notifier


@pytest.fixture
def deaf_systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield listener
    listener.close()


def test_a_full_notify_socket_does_not_block(deaf_systemd: socket.socket) -> None:
    notifier = Notifier()

    def flood() -> None:
        for n in range(500):
            notifier.status(f"step {n}")

    sender = threading.Thread(target=flood, daemon=True)

    sender.start()
    sender.join(timeout=5)

    assert not sender.is_alive(), "a notification blocked on a full socket"
    assert deaf_systemd.recv(4096).decode() == "STATUS=step 0"
