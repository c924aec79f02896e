"""Fuzzed registry answers through the real registry client against a local aiohttp server: bad
JSON, bad ``Link`` headers, huge tag lists and endless paging end in a ``RegistryError`` (or a
clean list of tags), never another exception, within a time and memory bound; tags that are
almost semver are dropped by planning, never an exception."""

from __future__ import annotations

import asyncio
import json
import re
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from yarl import URL

from specivod.adapters.registry import RegistryClient
from specivod.domain.errors import RegistryError
from specivod.domain.planning import make_plan
from specivod.domain.references import ImageReference
from specivod.domain.versions import Step, VersionPolicy, parse_tags
from specivod.retrying import RetryPolicy
from tests.support.local_http import local_servers

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REPO = "specivo/specivo"
BOUND_SECONDS = 10.0
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=80,
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.sampled_from(["name", "tags", "errors", "x"]), inner, max_size=4)
    ),
    max_leaves=25,
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _no_wait(_seconds: float) -> None:
    return None


def list_tags_from(
    handler: Handler,
    *,
    page_size: int = 100,
    max_tags: int = 1_000_000,
    hang_after: float = BOUND_SECONDS,
) -> tuple[list[str] | None, int]:
    """Run ``list_tags`` against ``handler``; the tags, or ``None`` after a ``RegistryError``;
    and the number of requests. Any other exception, or hanging for ``hang_after`` seconds, fails
    the test (a guard against endless reading, not a speed target: that lives in bench/)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)

    async def scenario() -> tuple[list[str] | None, int]:
        async with local_servers() as serve:
            domain = await serve(app)
            client = RegistryClient(
                ImageReference(domain, REPO),
                retry=RetryPolicy(attempts=2, sleep=_no_wait),
                timeout=5.0,
                page_size=page_size,
                max_tags=max_tags,
            )
            async with client:
                try:
                    tags = await asyncio.wait_for(client.list_tags(), hang_after)
                except RegistryError:
                    return None, client.requests
                return tags, client.requests

    return asyncio.run(scenario())


def replying(body: bytes, status: int = 200, **headers: str) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=body, status=status, headers={"Content-Type": "application/json", **headers}
        )

    return handler


@FUZZ
@given(body=st.one_of(st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode())))
def test_any_tag_list_body_is_tags_or_a_registry_error(body: bytes) -> None:
    tags, _ = list_tags_from(replying(body))
    assert tags is None or all(isinstance(tag, str) for tag in tags)


@FUZZ
@given(
    status=st.integers(100, 599).filter(lambda s: s not in (101, 204, 304) and s >= 200),
    body=st.binary(max_size=100),
    authenticate=st.one_of(st.none(), HEADER_TEXT),
)
def test_any_status_and_challenge_is_tags_or_a_registry_error(
    status: int, body: bytes, authenticate: str | None
) -> None:
    headers = {} if authenticate is None else {"WWW-Authenticate": authenticate}
    tags, requests = list_tags_from(replying(body, status, **headers))
    assert tags is None or status < 300
    assert requests <= 10


LINKS = st.one_of(
    HEADER_TEXT,
    st.builds(
        lambda target, rel: f"<{target}>; rel={rel}",
        st.one_of(
            HEADER_TEXT,
            st.sampled_from(
                [
                    f"/v2/{REPO}/tags/list?n=1&last=x",
                    "http://example.invalid/v2/x/tags/list",
                    "//other.invalid/x",
                    "",
                    "?",
                    "#",
                    "http://[::1",
                    "mailto:x",
                ]
            ),
        ),
        st.sampled_from(['"next"', "next", '"prev"', '"next next"', "", '"NEXT"']),
    ),
)


@FUZZ
@given(link=LINKS)
@example(link='<B\x85F/+"#C\xd9>; rel="next"')  # found by fuzzing: a path that grows every page
def test_any_link_header_is_tags_or_a_registry_error(link: str) -> None:
    assume(not breaks_url_handling(link))  # those have their own test below
    served = [0]

    async def handler(_request: web.Request) -> web.StreamResponse:
        served[0] += 1
        page = {"name": REPO, "tags": [f"0.1.{served[0]}"]}
        return web.json_response(page, headers={"Link": link})

    tags, requests = list_tags_from(handler)
    assert tags is None or all(isinstance(tag, str) for tag in tags)
    assert requests <= 10


def breaks_url_handling(link: str) -> bool:
    """A ``<target>`` in ``link`` that yarl cannot parse, or that has no origin once joined."""
    base = URL(f"http://127.0.0.1:1/v2/{REPO}/tags/list")
    for target in re.findall(r"<([^>]*)>", link):
        try:
            base.join(URL(target)).origin()
        except ValueError:
            return True
    return False


@pytest.mark.parametrize(
    "link",
    [
        "<0://[>",
        '<http://[::1/v2/x>; rel="next"',
        "<http://]/>",
        '<0:>;rel="next"',
        '<mailto:x>; rel="next"',
    ],
)
def test_an_unparseable_link_url_is_a_registry_error(link: str) -> None:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"name": REPO, "tags": ["0.1.1"]}, headers={"Link": link})

    assert list_tags_from(handler) == (None, 1)


def test_a_huge_tag_list_is_read_whole_within_bounded_memory() -> None:
    """Its speed is measured by bench/tags_listing.py, not here: this machine is shared."""
    count, page = 200_000, 10_000
    names = [f"0.{i // 1000}.{i % 1000}" for i in range(count)]

    async def handler(request: web.Request) -> web.StreamResponse:
        start = int(request.query.get("last", "0"))
        body = {"name": REPO, "tags": names[start : start + page]}
        headers = {}
        if start + page < count:
            headers["Link"] = f'</v2/{REPO}/tags/list?n={page}&last={start + page}>; rel="next"'
        return web.json_response(body, headers=headers)

    tracemalloc.start()
    try:
        tags, requests = list_tags_from(handler, page_size=page, hang_after=600)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tags == names
    assert requests == count // page
    assert peak < 256 * 1024 * 1024
    plan = make_plan(tags, "0.1.5", VersionPolicy("*", step=Step.ANY))
    assert plan.target is not None and plan.target.tag == names[-1]


def test_endless_paging_is_a_registry_error() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        start = int(request.query.get("last", "0"))
        body = {"name": REPO, "tags": [f"0.0.{start + i}" for i in range(100)]}
        link = f'</v2/{REPO}/tags/list?n=100&last={start + 100}>; rel="next"'
        return web.json_response(body, headers={"Link": link})

    tags, requests = list_tags_from(handler, max_tags=5_000)
    assert tags is None, "an endless tag list is a RegistryError"
    assert requests == 51, "it stops at the first page past the limit"


ALMOST = st.one_of(
    st.from_regex(r"v?[0-9]{1,25}(\.[0-9]{1,25}){0,4}(-[0-9A-Za-z.+_-]{0,12})?(\+[\w.-]{0,12})?"),
    st.from_regex(r"[=<>~^ ]?[0-9x*]{1,3}\.[0-9x*]{1,3}\.[0-9x*]{1,3}[ a-z]{0,3}"),
    st.text(max_size=20),
)


@FUZZ
@given(tags=st.lists(ALMOST, max_size=30), deployed=st.one_of(st.none(), ALMOST))
def test_almost_semver_tags_never_break_planning(tags: list[str], deployed: str | None) -> None:
    versions = parse_tags(tags)
    assert all(version.tag in tags for version in versions)
    plan: Any = make_plan(tags, deployed, VersionPolicy("*", step=Step.MINOR))
    assert plan.target is None or plan.target.tag in tags
