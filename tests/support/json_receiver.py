"""A loopback receiver for apprise's ``json://`` notifications: it keeps every posted JSON body."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.background_http import BackgroundHTTPServer


@dataclass
class JsonReceiver:
    port: int
    received: list[dict[str, Any]] = field(default_factory=list)

    def titles(self) -> list[str]:
        return [str(message["title"]) for message in self.received]


@contextmanager
def json_receiver() -> Iterator[JsonReceiver]:
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = BackgroundHTTPServer(Handler)
    try:
        yield JsonReceiver(port=int(server.address.rsplit(":", 1)[1]), received=bodies)
    finally:
        server.stop()
