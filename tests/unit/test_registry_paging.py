"""Tag pagination (``Link: <...>; rel="next"``, relative and absolute) and manifest digests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import pytest
from aiohttp import web

from specivod.adapters.registry import MANIFEST_MEDIA_TYPES, RegistryClient
from specivod.domain.errors import RegistryNotFound, RegistryProtocolError
from specivod.domain.references import ImageReference
from specivod.engine.ports import TagSource
from specivod.retrying import RetryPolicy, no_sleep
from tests.support.local_http import Serve

REPO = "specivo/specivo"
TAGS_PATH = f"/v2/{REPO}/tags/list"
ALL_TAGS = [f"0.{minor}.{patch}" for minor in range(5) for patch in range(7)]


def make_client(domain: str, page_size: int = 10) -> RegistryClient:
    return RegistryClient(
        ImageReference(domain, REPO),
        retry=RetryPolicy(attempts=2, sleep=no_sleep),
        timeout=5.0,
        page_size=page_size,
    )


def paginating_app(
    link: Callable[[web.Request, str, int], str], seen: list[str]
) -> web.Application:
    """Pages of ``n`` tags after ``last``; ``link`` builds the next-page URL."""

    async def tags(request: web.Request) -> web.Response:
        seen.append(str(request.rel_url))
        size = int(request.query["n"])
        last = request.query.get("last")
        start = ALL_TAGS.index(last) + 1 if last else 0
        page = ALL_TAGS[start : start + size]
        headers = {}
        if start + size < len(ALL_TAGS):
            headers["Link"] = f'<{link(request, page[-1], size)}>; rel="next"'
        return web.json_response({"name": REPO, "tags": page}, headers=headers)

    app = web.Application()
    app.router.add_get(TAGS_PATH, tags)
    return app


async def test_follows_relative_links_to_the_end(serve: Serve) -> None:
    seen: list[str] = []
    domain = await serve(paginating_app(lambda _r, last, n: f"{TAGS_PATH}?last={last}&n={n}", seen))
    async with make_client(domain, page_size=10) as client:
        assert await client.list_tags() == ALL_TAGS
        assert client.requests == 4
    assert seen[0] == f"{TAGS_PATH}?n=10"
    assert seen[1] == f"{TAGS_PATH}?last=0.1.2&n=10"


async def test_follows_path_relative_links(serve: Serve) -> None:
    seen: list[str] = []
    domain = await serve(paginating_app(lambda _r, last, n: f"list?n={n}&last={last}", seen))
    async with make_client(domain, page_size=16) as client:
        assert await client.list_tags() == ALL_TAGS
        assert client.requests == 3


async def test_follows_absolute_links(serve: Serve) -> None:
    seen: list[str] = []
    domain = await serve(
        paginating_app(
            lambda request, last, n: f"http://{request.host}{TAGS_PATH}?n={n}&last={last}", seen
        )
    )
    async with make_client(domain, page_size=7) as client:
        assert await client.list_tags() == ALL_TAGS
        assert client.requests == 5


async def test_one_page_when_the_registry_ignores_n(serve: Serve) -> None:
    async def tags(_request: web.Request) -> web.Response:
        return web.json_response({"name": REPO, "tags": ALL_TAGS})

    app = web.Application()
    app.router.add_get(TAGS_PATH, tags)
    domain = await serve(app)
    async with make_client(domain, page_size=5) as client:
        assert await client.list_tags() == ALL_TAGS
        assert client.requests == 1


def single_route(path: str, respond: Callable[[web.Request], web.Response]) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return respond(request)

    app = web.Application()
    app.router.add_route("*", path, handler)
    return app


async def test_a_link_loop_is_a_protocol_error(serve: Serve) -> None:
    domain = await serve(
        single_route(
            TAGS_PATH,
            lambda request: web.json_response(
                {"tags": [request.query.get("last", "a")]},
                headers={"Link": f'<{TAGS_PATH}?last=b&n=10>; rel="next"'},
            ),
        )
    )
    async with make_client(domain) as client:
        with pytest.raises(RegistryProtocolError, match="loops"):
            await client.list_tags()
        assert client.requests == 2


async def test_a_next_page_on_another_host_is_refused(serve: Serve) -> None:
    domain = await serve(
        single_route(
            TAGS_PATH,
            lambda _r: web.json_response(
                {"tags": ["a"]},
                headers={"Link": f'<https://elsewhere.example{TAGS_PATH}?last=a>; rel="next"'},
            ),
        )
    )
    async with make_client(domain) as client:
        with pytest.raises(RegistryProtocolError, match="another host"):
            await client.list_tags()


async def test_a_next_page_that_is_not_the_tag_list_is_refused(serve: Serve) -> None:
    """Found by fuzzing: a path-relative link such as ``<x/y>`` resolves one level deeper on each
    page, a new URL every time, so neither the loop check nor the new-tags check stopped it."""
    served = [0]

    async def handler(_request: web.Request) -> web.Response:
        served[0] += 1
        return web.json_response(
            {"tags": [f"0.1.{served[0]}"]}, headers={"Link": '<x/y>; rel="next"'}
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    domain = await serve(app)
    async with make_client(domain) as client:
        with pytest.raises(RegistryProtocolError, match="not the tag list"):
            await client.list_tags()
        assert client.requests == 1


async def test_null_tags_is_an_empty_list(serve: Serve) -> None:
    domain = await serve(single_route(TAGS_PATH, lambda _r: web.json_response({"tags": None})))
    async with make_client(domain) as client:
        assert await client.list_tags() == []


async def test_other_link_relations_are_ignored(serve: Serve) -> None:
    domain = await serve(
        single_route(
            TAGS_PATH,
            lambda _r: web.json_response(
                {"tags": ["a"]}, headers={"Link": f'<{TAGS_PATH}?last=z>; rel="prev"'}
            ),
        )
    )
    async with make_client(domain) as client:
        assert await client.list_tags() == ["a"]


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPES[2]}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


def manifest_app(*, with_header: bool, accepts: list[str], methods: list[str]) -> web.Application:
    async def manifest(request: web.Request) -> web.Response:
        methods.append(request.method)
        accepts.append(request.headers.get("Accept", ""))
        if request.match_info["tag"] != "0.1.11":
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        headers = {"Content-Type": MANIFEST_MEDIA_TYPES[2]}
        if with_header:
            headers["Docker-Content-Digest"] = DIGEST
        return web.Response(body=MANIFEST, headers=headers)

    app = web.Application()
    app.router.add_route("*", f"/v2/{REPO}/manifests/{{tag}}", manifest)
    return app


async def test_digest_from_head_with_all_four_media_types(serve: Serve) -> None:
    accepts: list[str] = []
    methods: list[str] = []
    domain = await serve(manifest_app(with_header=True, accepts=accepts, methods=methods))
    async with make_client(domain) as client:
        assert await client.manifest_digest("0.1.11") == DIGEST
    assert methods == ["HEAD"]
    assert [part.strip() for part in accepts[0].split(",")] == list(MANIFEST_MEDIA_TYPES)


async def test_digest_falls_back_to_get_and_sha256(serve: Serve) -> None:
    accepts: list[str] = []
    methods: list[str] = []
    domain = await serve(manifest_app(with_header=False, accepts=accepts, methods=methods))
    async with make_client(domain) as client:
        assert await client.manifest_digest("0.1.11") == DIGEST
    assert methods == ["HEAD", "GET"]


async def test_unknown_tag_is_not_found(serve: Serve) -> None:
    domain = await serve(manifest_app(with_header=True, accepts=[], methods=[]))
    async with make_client(domain) as client:
        with pytest.raises(RegistryNotFound, match=r"'9\.9\.9'"):
            await client.manifest_digest("9.9.9")


@pytest.mark.parametrize("tag", ["../../_catalog", "a/b", "", "-leading", "x" * 129])
async def test_invalid_tags_never_reach_the_network(tag: str) -> None:
    async with make_client("127.0.0.1:1") as client:
        with pytest.raises(RegistryNotFound, match="not a valid tag"):
            await client.manifest_digest(tag)
        assert client.requests == 0


async def test_malformed_digest_header_is_a_protocol_error(serve: Serve) -> None:
    domain = await serve(
        single_route(
            f"/v2/{REPO}/manifests/{{tag}}",
            lambda _r: web.Response(headers={"Docker-Content-Digest": "md5:abc"}),
        )
    )
    async with make_client(domain) as client:
        with pytest.raises(RegistryProtocolError, match="malformed digest"):
            await client.manifest_digest("0.1.11")


@pytest.mark.parametrize(
    ("reference", "base_url"),
    [
        (ImageReference("127.0.0.1:5000", REPO), "http://127.0.0.1:5000"),
        (ImageReference("localhost:5000", REPO), "http://localhost:5000"),
        (ImageReference("[::1]:5000", REPO), "http://[::1]:5000"),
        (ImageReference("ghcr.io", REPO), "https://ghcr.io"),
        (ImageReference("docker.io", REPO), "https://registry-1.docker.io"),
    ],
)
async def test_auto_scheme(reference: ImageReference, base_url: str) -> None:
    async with RegistryClient(reference) as client:
        assert str(client.base_url) == base_url


async def test_explicit_scheme_wins() -> None:
    async with RegistryClient(ImageReference("127.0.0.1:5000", REPO), scheme="https") as client:
        assert str(client.base_url) == "https://127.0.0.1:5000"


def test_is_the_engines_tag_source() -> None:
    registry: TagSource = RegistryClient(ImageReference("127.0.0.1:5000", REPO))
    assert "repository specivo/specivo" in registry.name
