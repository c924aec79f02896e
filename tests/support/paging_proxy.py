"""A paginating proxy in front of a real registry.

distribution 2.8 returns every tag in one response; Docker Hub, GHCR and Quay page them. This proxy
answers ``/v2/<name>/tags/list?n=&last=`` in pages (lexical order, like distribution 3) with a
``Link: <...>; rel="next"`` header, relative (Quay, GHCR) or absolute, and passes every other
request — and every non-200 tag list, such as a 401 challenge — through unchanged.

The upstream list is fetched when a listing starts (no ``last``) and reused for its later pages.
Run standalone with ``python -m tests.support.paging_proxy --upstream HOST:PORT``.
"""

from __future__ import annotations

import argparse
import bisect
import http.client
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Self
from urllib.parse import parse_qs, quote, urlsplit

from tests.support.background_http import BackgroundHTTPServer

_TAGS_PATH = re.compile(r"^/v2/(?P<name>.+)/tags/list$")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}


@dataclass
class _Upstream:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class PagingProxy:
    upstream: str
    """``host:port`` of the registry."""
    default_page: int = 100
    max_page: int = 100
    absolute_links: bool = False
    port: int = 0
    requests: list[str] = field(default_factory=list)
    _server: BackgroundHTTPServer | None = None

    def __post_init__(self) -> None:
        self._local = threading.local()
        self._listings: dict[tuple[str, str | None], list[str]] = {}
        self._lock = threading.Lock()
        self._upstream_connections: list[http.client.HTTPConnection] = []

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return self._server.address

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def _forward(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> _Upstream:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = http.client.HTTPConnection(
                self.upstream, timeout=30
            )
            with self._lock:
                self._upstream_connections.append(connection)
        forwarded = {k: v for k, v in headers.items() if k.lower() not in {"host", "connection"}}
        connection.request(method, target, body=body or None, headers=forwarded)
        response = connection.getresponse()
        data = response.read()
        return _Upstream(response.status, response.reason, response.getheaders(), data)

    def _page(
        self, name: str, query: dict[str, list[str]], authorization: str | None
    ) -> tuple[bytes, str | None] | _Upstream:
        last = query.get("last", [None])[0]
        size = min(int(query.get("n", [str(self.default_page)])[0]), self.max_page)
        key = (name, authorization)
        with self._lock:
            tags = self._listings.get(key) if last is not None else None
        if tags is None:
            headers = {"Authorization": authorization} if authorization else {}
            upstream = self._forward("GET", f"/v2/{name}/tags/list", headers, b"")
            if upstream.status != 200:
                return upstream
            tags = sorted(json.loads(upstream.body).get("tags") or [])
            with self._lock:
                self._listings[key] = tags
        start = bisect.bisect_right(tags, last) if last is not None else 0
        page = tags[start : start + size]
        body = json.dumps({"name": name, "tags": page}).encode()
        if start + size >= len(tags):
            return body, None
        target = f"/v2/{name}/tags/list?last={quote(page[-1])}&n={size}"
        if self.absolute_links:
            target = f"{self.url}{target}"
        return body, f'<{target}>; rel="next"'

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def _send(
                self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
            ) -> None:
                self.send_response(status, reason)
                for key, value in headers:
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                proxy.requests.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                match = _TAGS_PATH.match(url.path)
                if self.command == "GET" and match:
                    result = proxy._page(
                        match["name"], parse_qs(url.query), self.headers.get("Authorization")
                    )
                    if isinstance(result, tuple):
                        page, link = result
                        headers = [("Content-Type", "application/json")]
                        if link is not None:
                            headers.append(("Link", link))
                        self._send(200, "OK", headers, page)
                        return
                    upstream = result
                else:
                    upstream = proxy._forward(self.command, self.path, dict(self.headers), body)
                self._send(upstream.status, upstream.reason, upstream.headers, upstream.body)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _handle

        return Handler

    def start(self) -> Self:
        self._server = BackgroundHTTPServer(self._handler(), self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        with self._lock:
            for connection in self._upstream_connections:
                connection.close()
            self._upstream_connections.clear()

    def serve_forever(self) -> None:
        self.start()
        print(f"ready {self.address}", flush=True)
        threading.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True, help="registry host:port")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--page", type=int, default=100, help="default and largest page size")
    parser.add_argument("--absolute", action="store_true", help="absolute Link URLs")
    args = parser.parse_args()
    PagingProxy(
        args.upstream,
        default_page=args.page,
        max_page=args.page,
        absolute_links=args.absolute,
        port=args.port,
    ).serve_forever()


if __name__ == "__main__":
    main()
