"""A token server for the real registry's ``auth.token`` mode (the flow of Docker Hub, GHCR, Quay).

It signs ES256 JWTs with a fresh key whose self-signed certificate is the registry's
``rootcertbundle`` and travels in the token's ``x5c`` header, so the registry validates real
signatures. Users authenticate with Basic auth; authenticated users get the actions they ask for,
anonymous callers get ``pull`` only when ``anonymous_pull`` is set. Runs in a thread (stdlib HTTP
server), so synchronous and asynchronous callers can both use it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.background_http import BackgroundHTTPServer
from tests.support.registry import TokenAuthConfig

SERVICE = "specivod-test-registry"
ISSUER = "specivod-test-token-issuer"


def _self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def _requested_access(scopes: list[str]) -> list[tuple[str, str, list[str]]]:
    """``repository:name:pull,push`` scopes (space separated, possibly repeated)."""
    wanted = []
    for scope in (part for value in scopes for part in value.split()):
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind and name:
            wanted.append((kind, name, [a for a in actions.split(",") if a]))
    return wanted


@dataclass
class TokenServer:
    workdir: Path
    users: dict[str, str] = field(default_factory=dict)
    anonymous_pull: bool = True
    lifetime: int = 300
    service: str = SERVICE
    issuer: str = ISSUER
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: BackgroundHTTPServer | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._certificate = _self_signed(self._key)
        self.cert_path = self.workdir / "token-root.pem"
        self.cert_path.write_bytes(self._certificate.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(
            self._certificate.public_bytes(serialization.Encoding.DER)
        ).decode("ascii")

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("token server not started")
        return self._server.address

    @property
    def realm(self) -> str:
        return f"http://{self.address}/token"

    def auth_config(self) -> TokenAuthConfig:
        return TokenAuthConfig(
            realm=self.realm,
            service=self.service,
            issuer=self.issuer,
            root_cert_bundle=self.cert_path,
        )

    def issue(self, subject: str, access: list[dict[str, Any]]) -> str:
        """A signed token the registry accepts, for ``access`` entries like
        ``{"type": "repository", "name": "a/b", "actions": ["pull", "push"]}``."""
        now = dt.datetime.now(dt.UTC)
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + dt.timedelta(seconds=self.lifetime),
            "nbf": now - dt.timedelta(seconds=5),
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": [self._x5c]})

    def _grant(self, subject: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        access = []
        for kind, name, actions in _requested_access(scopes):
            allowed = actions if subject else [a for a in actions if a == "pull"]
            if subject is None and not self.anonymous_pull:
                allowed = []
            access.append({"type": kind, "name": name, "actions": allowed})
        return access

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def _reply(self, status: int, document: dict[str, Any]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _subject(self) -> tuple[bool, str | None]:
                header = self.headers.get("Authorization")
                if header is None:
                    return True, None
                if not header.startswith("Basic "):
                    return False, None
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                ok = user in server.users and secrets.compare_digest(server.users[user], password)
                return ok, user if ok else None

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                server.requests.append({"path": url.path, **query})
                if url.path != "/token":
                    self._reply(HTTPStatus.NOT_FOUND, {"details": "not found"})
                    return
                if query.get("service") != [server.service]:
                    self._reply(HTTPStatus.BAD_REQUEST, {"details": "unknown service"})
                    return
                ok, subject = self._subject()
                if not ok:
                    self._reply(
                        HTTPStatus.UNAUTHORIZED, {"details": "incorrect username or password"}
                    )
                    return
                token = server.issue(subject or "", server._grant(subject, query.get("scope", [])))
                issued = dt.datetime.now(dt.UTC).isoformat()
                self._reply(
                    HTTPStatus.OK,
                    {
                        "token": token,
                        "access_token": token,
                        "expires_in": server.lifetime,
                        "issued_at": issued,
                    },
                )

        return Handler

    def start(self) -> Self:
        self._server = BackgroundHTTPServer(self._handler(), 0)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def token_requests(self) -> int:
        return sum(1 for request in self.requests if request["path"] == "/token")
