"""sd_notify against a real unix datagram socket set as NOTIFY_SOCKET: what systemd would read."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from specivod.daemon.notify import Notifier


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield listener
    listener.close()


def received(listener: socket.socket) -> str:
    return listener.recv(4096).decode()


def test_each_notification_arrives_as_systemd_expects(systemd: socket.socket) -> None:
    notifier = Notifier()
    assert notifier.enabled
    notifier.ready()
    assert received(systemd) == "READY=1"
    notifier.status("verifying 0.1.11:\nwaiting for api")
    assert received(systemd) == "STATUS=verifying 0.1.11: waiting for api"
    notifier.watchdog()
    assert received(systemd) == "WATCHDOG=1"
    notifier.extend_timeout(90)
    assert received(systemd) == "EXTEND_TIMEOUT_USEC=90000000"
    notifier.extend_timeout(0.0000001)
    assert received(systemd) == "EXTEND_TIMEOUT_USEC=1"
    notifier.stopping()
    assert received(systemd) == "STOPPING=1"


def test_an_abstract_socket_works_too(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"specivod-test-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + name)
    listener.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        Notifier().ready()
        assert received(listener) == "READY=1"
    finally:
        listener.close()


def test_without_notify_socket_nothing_is_sent_and_nothing_fails(
    systemd: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET")
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready()
    notifier.status("idle")
    notifier.watchdog()
    notifier.extend_timeout(10)
    notifier.stopping()
    systemd.setblocking(False)
    with pytest.raises(BlockingIOError):
        systemd.recv(4096)


def test_a_vanished_socket_does_not_raise(systemd: socket.socket, tmp_path: Path) -> None:
    notifier = Notifier()
    systemd.close()
    (tmp_path / "notify").unlink()
    notifier.ready()
    notifier.watchdog()


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "1", None),
        ("0", None, None),
        ("junk", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    systemd: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    usec: str | None,
    pid: str | None,
    expected: float | None,
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)
    assert Notifier().watchdog_interval() == expected
