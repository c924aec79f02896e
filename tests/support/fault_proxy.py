"""A fault-injecting HTTP proxy in front of a real registry.

Every request is forwarded to the registry unchanged (bodies streamed) unless a ``Fault`` matches
it: the first matching fault with uses left acts instead. A fault matches on the path (a regular
expression searched in it) and on who asks — ``"docker"`` (dockerd's pulls), ``"specivod"``
(specivod's own client) or anyone — and acts by answering a status of its own (a 500, a 429 with
``Retry-After``), by cutting the connection after part of the body was sent (``cut_after``, counted
from the blob's start: a transfer dockerd resumes with ``Range`` is cut at the same byte), or by
killing the proxy (``die``): the listener closes and every later or open connection is dropped, as
if the registry's host went away. ``log`` records each request and what was done with it.
Requests go upstream header by header (dockerd sends one ``Accept`` line per manifest type; folding
them into a dict leaves one, and the registry may then answer a converted schema 1 manifest).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Self

from tests.support.background_http import BackgroundHTTPServer

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "date", "server"}
_CHUNK = 64 * 1024


@dataclass
class Fault:
    path: str
    """A regular expression searched in the request path, e.g. ``r"/manifests/"``."""
    client: str | None = None
    """``"docker"``, ``"specivod"`` (a substring of the User-Agent) or None for anyone."""
    status: int | None = None
    retry_after: str | None = None
    cut_after: int | None = None
    """Forward the answer's headers and this many body bytes, then drop the connection."""
    die: bool = False
    times: int | None = None
    """How many requests this fault acts on; None: every one."""
    used: int = 0

    def matches(self, path: str, user_agent: str) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        if self.client is not None and self.client not in user_agent.lower():
            return False
        return re.search(self.path, path) is not None


@dataclass(frozen=True)
class Logged:
    at: float
    """``time.monotonic()`` when the request arrived."""
    method: str
    path: str
    user_agent: str
    outcome: str
    """``forwarded 200``, ``answered 500``, ``cut after 10 of 500 bytes``, ``dropped (dead)``."""


@dataclass
class FaultProxy:
    upstream: str
    """``host:port`` of the registry."""
    faults: list[Fault] = field(default_factory=list)
    log: list[Logged] = field(default_factory=list)
    on_death: Callable[[], None] | None = None
    """Called once when a ``die`` fault fires (e.g. to stop the registry process too)."""
    port: int = 0
    """0: any free port at the first start; a restart keeps the port."""
    _server: BackgroundHTTPServer | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._dead = threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dead(self) -> bool:
        return self._dead.is_set()

    def requests(self, client: str | None = None, path: str = "") -> list[Logged]:
        """The logged requests from ``client`` (a User-Agent substring) whose path has ``path``."""
        return [
            entry
            for entry in self.log
            if (client is None or client in entry.user_agent.lower())
            and re.search(path, entry.path)
        ]

    def _choose(self, path: str, user_agent: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(path, user_agent):
                    fault.used += 1
                    return fault
        return None

    def _record(self, at: float, handler: BaseHTTPRequestHandler, outcome: str) -> None:
        entry = Logged(
            at, handler.command, handler.path, handler.headers.get("User-Agent", ""), outcome
        )
        with self._lock:
            self.log.append(entry)

    def _kill(self) -> None:
        if self._dead.is_set():
            return
        self._dead.set()
        server = self._server
        if server is not None:
            threading.Thread(target=server.stop, daemon=True).start()
        if self.on_death is not None:
            self.on_death()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def _drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _answer(self, fault: Fault) -> str:
                status = fault.status or 500
                code = "TOOMANYREQUESTS" if status == 429 else "UNKNOWN"
                body = json.dumps(
                    {"errors": [{"code": code, "message": f"injected {status} (fault proxy)"}]}
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if fault.retry_after is not None:
                    self.send_header("Retry-After", fault.retry_after)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                return f"answered {status}"

            def _budget(self, cut_after: int | None) -> int | None:
                """Body bytes to send before the cut: ``cut_after`` counts from the blob's
                start, so a resumed transfer (``Range: bytes=N-``) is cut at the same place."""
                if cut_after is None:
                    return None
                resumed = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
                return max(cut_after - (int(resumed[1]) if resumed else 0), 0)

            def _forward(self, body: bytes, cut_after: int | None) -> str:
                connection = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    # Header by header: dockerd sends one Accept line per manifest type.
                    connection.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for key, value in self.headers.items():
                        if key.lower() != "connection":
                            connection.putheader(key, value)
                    connection.endheaders(body or None)
                    response = connection.getresponse()
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in _HOP_BY_HOP:
                            self.send_header(key, value)
                    self.end_headers()
                    sent = 0
                    cut_after = self._budget(cut_after)
                    while self.command != "HEAD":
                        chunk = response.read(_CHUNK)
                        if not chunk:
                            break
                        if cut_after is not None and sent + len(chunk) > cut_after:
                            self.wfile.write(chunk[: cut_after - sent])
                            self.wfile.flush()
                            self._drop()
                            total = response.getheader("Content-Length", "?")
                            return f"cut after {cut_after} of {total} bytes"
                        self.wfile.write(chunk)
                        sent += len(chunk)
                    return f"forwarded {response.status}"
                finally:
                    connection.close()

            def _handle(self) -> None:
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.dead:
                    proxy._record(arrived, self, "dropped (dead)")
                    self._drop()
                    return
                fault = proxy._choose(self.path, self.headers.get("User-Agent", ""))
                if fault is not None and fault.die:
                    proxy._record(arrived, self, "dropped (died)")
                    proxy._kill()
                    self._drop()
                    return
                if fault is not None and fault.cut_after is None:
                    proxy._record(arrived, self, self._answer(fault))
                    return
                cut_after = fault.cut_after if fault is not None else None
                try:
                    outcome = self._forward(body, cut_after)
                except OSError as error:
                    outcome = f"upstream failed: {error}"
                    self._drop()
                proxy._record(arrived, self, outcome)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _handle

        return Handler

    def start(self) -> Self:
        self._dead.clear()
        self._server = BackgroundHTTPServer(self._handler(), self.port)
        self.port = int(self._server.address.rpartition(":")[2])
        return self

    def reset(self) -> None:
        """No faults, an empty log, and listening again (on the same port) if it died."""
        with self._lock:
            self.faults = []
            self.log = []
        if self.dead:
            self.stop()
            self.start()

    def stop(self) -> None:
        self._dead.set()
        if self._server is not None:
            self._server.stop()
            self._server = None
