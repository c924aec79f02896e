"""Test ports are never handed out twice by one process, even when the kernel offers the same
free port again."""

from __future__ import annotations

import socket

import pytest

from tests.support import ports


def test_a_port_the_kernel_offers_again_is_not_handed_out_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    offered = iter([41001, 41001, 41001, 41002])

    class Probe:
        def __enter__(self) -> Probe:
            return self

        def __exit__(self, *_: object) -> None:
            pass

        def bind(self, _: object) -> None:
            self.port = next(offered)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(ports, "_HANDED_OUT", set())
    monkeypatch.setattr(socket, "socket", lambda *_: Probe())
    assert [ports.free_port(), ports.free_port()] == [41001, 41002]
