"""Challenge-driven auth against a local fake registry: Basic, Bearer through a token endpoint,
the token cache (one token for many requests, a new one after expiry) and refusals."""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr

from specivod.adapters.registry import Credentials, RegistryClient, registry_from_settings
from specivod.adapters.registry.credentials import CredentialSource
from specivod.domain.errors import RegistryAuthError, RegistryProtocolError
from specivod.domain.references import ImageReference
from specivod.retrying import RetryPolicy, no_sleep
from specivod.settings import RegistrySettings
from tests.support.local_http import Serve

REPO = "specivo/specivo"
TAGS_PATH = f"/v2/{REPO}/tags/list"
SCOPE = f"repository:{REPO}:pull"


@dataclass
class FakeClock:
    mono: float = 1000.0

    def now(self) -> datetime:
        return datetime(2025, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.mono

    async def sleep(self, seconds: float) -> None:
        self.mono += seconds


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def make_client(
    domain: str,
    credentials: Credentials | CredentialSource | None = None,
    clock: FakeClock | None = None,
) -> RegistryClient:
    return RegistryClient(
        ImageReference(domain, REPO),
        credentials=credentials,
        retry=RetryPolicy(attempts=2, sleep=no_sleep),
        timeout=5.0,
        clock=clock,
    )


def alice(password: str | None = None) -> Credentials:
    return Credentials(username="alice", password=SecretStr(password or "wonderland"))


def basic_registry(seen: list[str | None]) -> web.Application:
    async def tags(request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization")
        seen.append(authorization)
        if authorization != basic("alice", "wonderland"):
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="Registry Realm"'},
            )
        return web.json_response({"tags": ["0.1.10"]})

    app = web.Application()
    app.router.add_get(TAGS_PATH, tags)
    return app


async def test_basic_challenge_then_preemptive_basic(serve: Serve) -> None:
    seen: list[str | None] = []
    domain = await serve(basic_registry(seen))
    async with make_client(domain, alice()) as client:
        assert await client.list_tags() == ["0.1.10"]
        assert await client.list_tags() == ["0.1.10"]
        assert client.requests == 3
    assert seen == [None, basic("alice", "wonderland"), basic("alice", "wonderland")]


async def test_basic_with_wrong_password_is_an_auth_error(serve: Serve) -> None:
    domain = await serve(basic_registry([]))
    async with make_client(domain, alice("wrong-horse")) as client:
        with pytest.raises(RegistryAuthError) as caught:
            await client.list_tags()
    message = str(caught.value)
    assert "refused the credentials of user 'alice'" in message
    assert domain in message
    assert REPO in message
    assert "wrong-horse" not in message


async def test_basic_without_credentials_says_how_to_log_in(serve: Serve) -> None:
    domain = await serve(basic_registry([]))
    async with make_client(domain) as client:
        with pytest.raises(RegistryAuthError, match="password_file") as caught:
            await client.list_tags()
    assert str(caught.value).startswith(f"registry {domain}, repository {REPO}: ")


async def test_basic_with_only_an_identity_token_is_an_auth_error(serve: Serve) -> None:
    domain = await serve(basic_registry([]))
    credentials = Credentials(identity_token=SecretStr("refresh"))
    async with make_client(domain, credentials) as client:
        with pytest.raises(RegistryAuthError, match="only an identity token"):
            await client.list_tags()


@dataclass
class TokenService:
    """A fake registry with a token endpoint on the same server; tokens are counted strings."""

    expires_in: int | None = 300
    token_key: str = "token"
    users: dict[str, str] = field(default_factory=lambda: {"alice": "wonderland"})
    anonymous: bool = True
    revoked: set[str] = field(default_factory=set)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)
    realm: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self.token)
        app.router.add_post("/token", self.oauth)
        app.router.add_get(TAGS_PATH, self.tags)
        app.router.add_route("HEAD", f"/v2/{REPO}/manifests/{{tag}}", self.manifest)
        return app

    def _grant(self) -> web.Response:
        body: dict[str, object] = {self.token_key: f"token-{next(self.counter)}"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return web.json_response(body)

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests.append(dict(request.query))
        authorization = request.headers.get("Authorization")
        if authorization is None and not self.anonymous:
            return web.json_response({"details": "login required"}, status=401)
        if authorization is not None and authorization not in {
            basic(user, password) for user, password in self.users.items()
        }:
            return web.json_response({"details": "incorrect username or password"}, status=401)
        return self._grant()

    async def oauth(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_requests.append({key: str(value) for key, value in form.items()})
        if form.get("refresh_token") != "identity-xyz":
            return web.json_response({"error": "invalid_grant"}, status=401)
        return self._grant()

    def _authorized(self, request: web.Request) -> web.Response | None:
        authorization = request.headers.get("Authorization", "")
        token = authorization.removeprefix("Bearer ")
        if authorization.startswith("Bearer token-") and token not in self.revoked:
            return None
        self.realm = f"http://{request.host}/token"
        challenge = f'Bearer realm="{self.realm}",service="fake-registry",scope="{SCOPE}"'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    async def tags(self, request: web.Request) -> web.Response:
        return self._authorized(request) or web.json_response({"tags": ["0.1.10", "0.1.11"]})

    async def manifest(self, request: web.Request) -> web.Response:
        digest = "sha256:" + "a" * 64
        return self._authorized(request) or web.Response(headers={"Docker-Content-Digest": digest})


async def test_bearer_token_fetched_once_for_many_requests(serve: Serve) -> None:
    service = TokenService()
    domain = await serve(service.app())
    async with make_client(domain, alice()) as client:
        assert await client.list_tags() == ["0.1.10", "0.1.11"]
        for _ in range(3):
            assert (await client.manifest_digest("0.1.11")).startswith("sha256:")
        assert await client.list_tags() == ["0.1.10", "0.1.11"]
        # one 401, one token request, then five authorised requests
        assert client.requests == 7
    assert service.token_requests == [{"service": "fake-registry", "scope": SCOPE}]


async def test_bearer_token_renewed_after_expiry(serve: Serve) -> None:
    service = TokenService(expires_in=60)
    clock = FakeClock()
    domain = await serve(service.app())
    async with make_client(domain, alice(), clock=clock) as client:
        await client.list_tags()
        clock.mono += 45
        await client.list_tags()
        assert len(service.token_requests) == 1
        clock.mono += 10  # 55 s: inside the renewal margin of a 60 s token
        await client.list_tags()
        assert len(service.token_requests) == 2
        assert client.requests == 6


async def test_default_lifetime_when_expires_in_is_missing(serve: Serve) -> None:
    service = TokenService(expires_in=None, token_key="access_token")
    clock = FakeClock()
    domain = await serve(service.app())
    async with make_client(domain, clock=clock) as client:
        await client.list_tags()
        clock.mono += 49
        await client.list_tags()
        assert len(service.token_requests) == 1
        clock.mono += 2
        await client.list_tags()
        assert len(service.token_requests) == 2


async def test_anonymous_bearer_token(serve: Serve) -> None:
    service = TokenService()
    domain = await serve(service.app())
    async with make_client(domain) as client:
        assert await client.list_tags() == ["0.1.10", "0.1.11"]


async def test_token_endpoint_refusing_credentials_is_an_auth_error(serve: Serve) -> None:
    service = TokenService()
    domain = await serve(service.app())
    async with make_client(domain, alice("nope-nope")) as client:
        with pytest.raises(RegistryAuthError) as caught:
            await client.list_tags()
    message = str(caught.value)
    assert f"token service http://{domain}/token refused" in message
    assert "'alice'" in message
    assert "nope-nope" not in message


async def test_anonymous_refused_by_token_endpoint(serve: Serve) -> None:
    service = TokenService(anonymous=False)
    domain = await serve(service.app())
    async with make_client(domain) as client:
        with pytest.raises(RegistryAuthError, match="anonymous access"):
            await client.list_tags()


async def test_revoked_token_is_replaced_once(serve: Serve) -> None:
    service = TokenService()
    domain = await serve(service.app())
    async with make_client(domain, alice()) as client:
        await client.list_tags()
        service.revoked.add("token-0")
        assert await client.list_tags() == ["0.1.10", "0.1.11"]
    assert len(service.token_requests) == 2


async def test_registry_rejecting_fresh_tokens_is_an_auth_error(serve: Serve) -> None:
    service = TokenService()
    service.revoked.update(f"token-{n}" for n in range(10))
    domain = await serve(service.app())
    async with make_client(domain, alice()) as client:
        with pytest.raises(RegistryAuthError, match="refused the credentials of user 'alice'"):
            await client.list_tags()
        assert client.requests == 3
    assert len(service.token_requests) == 1


async def test_identity_token_uses_oauth_refresh(serve: Serve) -> None:
    service = TokenService()
    domain = await serve(service.app())
    credentials = Credentials(identity_token=SecretStr("identity-xyz"))
    async with make_client(domain, credentials) as client:
        assert await client.list_tags() == ["0.1.10", "0.1.11"]
    assert service.token_requests == [
        {
            "grant_type": "refresh_token",
            "refresh_token": "identity-xyz",
            "client_id": "specivod",
            "scope": SCOPE,
            "service": "fake-registry",
        }
    ]


def challenging(header: str, status: int = 401) -> web.Application:
    async def tags(_request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"WWW-Authenticate": header})

    app = web.Application()
    app.router.add_get(TAGS_PATH, tags)
    return app


async def test_unsupported_scheme_is_an_auth_error(serve: Serve) -> None:
    domain = await serve(challenging('Negotiate, Digest realm="r", nonce="n"'))
    async with make_client(domain, alice()) as client:
        with pytest.raises(RegistryAuthError, match="unsupported auth scheme"):
            await client.list_tags()


@pytest.mark.parametrize(
    "header", ['Bearer service="x"', 'Bearer realm="ftp://x/token"', 'Bearer realm="oops']
)
async def test_unusable_bearer_challenge_is_a_protocol_error(serve: Serve, header: str) -> None:
    domain = await serve(challenging(header))
    async with make_client(domain) as client:
        with pytest.raises(RegistryProtocolError):
            await client.list_tags()


async def test_forbidden_is_an_auth_error(serve: Serve) -> None:
    async def tags(_request: web.Request) -> web.Response:
        return web.json_response({"errors": [{"code": "DENIED", "message": "no"}]}, status=403)

    app = web.Application()
    app.router.add_get(TAGS_PATH, tags)
    domain = await serve(app)
    async with make_client(domain) as client:
        with pytest.raises(RegistryAuthError, match="403"):
            await client.list_tags()


async def test_token_endpoint_without_token_is_a_protocol_error(serve: Serve) -> None:
    service = TokenService(token_key="tokn")
    domain = await serve(service.app())
    async with make_client(domain) as client:
        with pytest.raises(RegistryProtocolError, match="sent no token"):
            await client.list_tags()


async def test_registry_from_settings_reads_the_password_file(serve: Serve, tmp_path: Path) -> None:
    seen: list[str | None] = []
    domain = await serve(basic_registry(seen))
    password_file = tmp_path / "password"
    password_file.write_text("wonderland\n", encoding="utf-8")
    settings = RegistrySettings(
        image=f"{domain}/{REPO}", username="alice", password_file=password_file, timeout="2s"
    )
    async with registry_from_settings(settings) as client:
        assert await client.list_tags() == ["0.1.10"]
        assert client.page_size == settings.page_size
    assert seen[-1] == basic("alice", "wonderland")


async def test_registry_from_settings_falls_back_to_the_docker_config(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str | None] = []
    domain = await serve(basic_registry(seen))
    login = base64.b64encode(b"alice:wonderland").decode()
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {domain: {"auth": login}}}), encoding="utf-8"
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    settings = RegistrySettings(image=f"{domain}/{REPO}")
    async with registry_from_settings(settings) as client:
        assert await client.list_tags() == ["0.1.10"]
    assert seen[-1] == basic("alice", "wonderland")
