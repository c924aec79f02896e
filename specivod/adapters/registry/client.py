"""The registry client: tags, manifest digests and release info of one repository over the
distribution API v2."""

from __future__ import annotations

import hashlib
import json
import re
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, Self

from yarl import URL

from specivod.adapters.clock import Clock, SystemClock
from specivod.adapters.registry.auth import Authenticator, TokenGrant
from specivod.adapters.registry.challenge import (
    Challenge,
    ChallengeSyntaxError,
    parse_header_values,
)
from specivod.adapters.registry.credentials import (
    Anonymous,
    Credentials,
    CredentialSource,
    StaticCredentials,
)
from specivod.adapters.registry.release import read_release
from specivod.adapters.registry.tokens import fetch_token
from specivod.adapters.registry.transport import Reply, Transport
from specivod.domain.errors import (
    RegistryAuthError,
    RegistryNotFound,
    RegistryProtocolError,
)
from specivod.domain.references import ImageReference
from specivod.domain.releases import ReleaseInfo
from specivod.retrying import RetryPolicy

Scheme = Literal["auto", "https", "http"]

MANIFEST_MEDIA_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
"""A manifest or image config larger than this is not read (real ones are a few kilobytes)."""
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")


def _error_detail(body: bytes) -> str:
    """The first ``errors[]`` entry of a distribution error body, if there is one."""
    try:
        errors = json.loads(body).get("errors") or []
        first = errors[0]
        return f": {first.get('code', '')} {first.get('message', '')}".rstrip()
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        return ""


def _same_origin(url: URL, base: URL) -> bool:
    try:
        return url.origin() == base.origin()
    except ValueError:  # no host: not even a place to compare
        return False


class RegistryClient:
    """Read-only client for one repository; implements ``engine.ports.TagSource``.

    Use it as an async context manager (or call ``close()``) so its HTTP session is released.
    ``requests`` counts every HTTP request sent, token requests and retries included.
    """

    def __init__(
        self,
        reference: ImageReference,
        *,
        credentials: CredentialSource | Credentials | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        page_size: int = 100,
        scheme: Scheme = "auto",
        clock: Clock | None = None,
        max_tags: int = 1_000_000,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.reference = reference
        self.page_size = page_size
        self.max_tags = max_tags
        """A tag list longer than this is refused: a registry whose pages never end would
        otherwise keep specivod reading (and growing) forever."""
        if scheme == "auto":
            scheme = "http" if reference.is_loopback else "https"
        self.base_url = URL(f"{scheme}://{reference.api_host}")
        if isinstance(credentials, Credentials):
            credentials = StaticCredentials(credentials)
        clock = clock or SystemClock()
        self._where = f"registry {reference.api_host}, repository {reference.path}"
        self._transport = Transport(
            where=self._where, timeout=timeout, retry=retry or RetryPolicy(), clock=clock
        )
        self._auth = Authenticator(
            credentials or Anonymous(), self._fetch_token, clock, where=self._where
        )

    @property
    def name(self) -> str:
        """The repository, for messages: ``registry HOST, repository PATH``."""
        return self._where

    @property
    def requests(self) -> int:
        return self._transport.requests

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._transport.close()

    async def list_tags(self) -> list[str]:
        tags: dict[str, None] = {}
        url: URL | None = self._api("tags/list").with_query(n=str(self.page_size))
        seen: set[URL] = set()
        while url is not None:
            if url in seen:
                raise self._protocol_error(f"the tag list's Link header loops back to {url}")
            seen.add(url)
            reply = await self._get_ok(url, accept="application/json", what="repository")
            page = self._tags_page(reply)
            known = len(tags)
            tags.update(dict.fromkeys(page))
            url = reply.next_link
            if len(tags) > self.max_tags:
                raise self._protocol_error(
                    f"the tag list passes {self.max_tags} tags and goes on; refusing to read more"
                )
            if url is not None:
                if not _same_origin(url, self.base_url):
                    raise self._protocol_error(
                        f"the tag list's next page is on another host: {url}"
                    )
                if url.path != self._api("tags/list").path:
                    raise self._protocol_error(
                        f"the tag list's next page is not the tag list: {url}"
                    )
                if len(tags) == known:
                    raise self._protocol_error(f"a tag list page without new tags links to {url}")
        return list(tags)

    async def manifest_digest(self, tag: str) -> str:
        if not _TAG.fullmatch(tag):
            raise RegistryNotFound(f"{self._where}: {tag!r} is not a valid tag")
        url = self._api(f"manifests/{tag}")
        accept = ", ".join(MANIFEST_MEDIA_TYPES)
        reply = await self._request("HEAD", url, accept=accept)
        self._check(reply, what=f"tag {tag!r}")
        digest = reply.headers.get("Docker-Content-Digest")
        if digest is None:
            reply = await self._get_ok(url, accept=accept, what=f"tag {tag!r}")
            digest = reply.headers.get("Docker-Content-Digest")
            if digest is None:
                return "sha256:" + hashlib.sha256(reply.body).hexdigest()
        if not _DIGEST.fullmatch(digest):
            raise self._protocol_error(f"tag {tag!r} has a malformed digest {digest!r}")
        return digest

    async def manifest_document(self, reference: str) -> tuple[str, bytes]:
        """(digest, body) of the manifest or index that ``reference`` (a tag or a digest) names."""
        if not (_TAG.fullmatch(reference) or _DIGEST.fullmatch(reference)):
            raise RegistryNotFound(f"{self._where}: {reference!r} is not a valid tag or digest")
        what = f"manifest {reference!r}"
        reply = await self._get_ok(
            self._api(f"manifests/{reference}"), accept=", ".join(MANIFEST_MEDIA_TYPES), what=what
        )
        self._bounded(reply, what)
        digest = reply.headers.get("Docker-Content-Digest")
        if digest is None or not _DIGEST.fullmatch(digest):
            digest = "sha256:" + hashlib.sha256(reply.body).hexdigest()
        return digest, reply.body

    async def blob(self, digest: str) -> bytes:
        """A blob small enough to read whole (an image config), checked against its digest."""
        if not _DIGEST.fullmatch(digest):
            raise self._protocol_error(f"malformed blob digest {digest!r}")
        what = f"blob {digest}"
        reply = await self._get_ok(self._api(f"blobs/{digest}"), accept="*/*", what=what)
        self._bounded(reply, what)
        algorithm, _, expected = digest.partition(":")
        if algorithm == "sha256" and hashlib.sha256(reply.body).hexdigest() != expected:
            raise self._protocol_error(f"{what} does not match its digest")
        return reply.body

    async def release_info(self, tag: str, digest: str | None = None) -> ReleaseInfo:
        """``tag``'s OCI labels and annotations and its image creation time, without pulling;
        with ``digest``, read from that manifest (what the tag was just seen to point at)."""
        return await read_release(self, tag, digest)

    def _bounded(self, reply: Reply, what: str) -> None:
        if len(reply.body) > MAX_DOCUMENT_BYTES:
            raise self._protocol_error(
                f"{what} is {len(reply.body)} bytes, more than {MAX_DOCUMENT_BYTES} allowed"
            )

    def _api(self, suffix: str) -> URL:
        return self.base_url.with_path(f"/v2/{self.reference.path}/{suffix}")

    def _protocol_error(self, detail: str) -> RegistryProtocolError:
        return RegistryProtocolError(f"{self._where}: {detail}")

    async def _get_ok(self, url: URL, *, accept: str, what: str) -> Reply:
        reply = await self._request("GET", url, accept=accept)
        self._check(reply, what=what)
        return reply

    def _check(self, reply: Reply, *, what: str) -> None:
        if 200 <= reply.status < 300:
            return
        detail = _error_detail(reply.body)
        if reply.status == HTTPStatus.NOT_FOUND:
            raise RegistryNotFound(f"{self._where}: {what} not found{detail}")
        if reply.status == HTTPStatus.FORBIDDEN:
            raise RegistryAuthError(
                f"{self._where}: access denied (403) to {self._auth.identity()}{detail}"
            )
        target = reply.url.with_query(None)
        raise self._protocol_error(
            f"unexpected answer {reply.status} {reply.reason} to {target}{detail}"
        )

    async def _request(self, method: str, url: URL, *, accept: str) -> Reply:
        """One request, answering at most one auth challenge (a second 401 is a refusal)."""
        for challenge_round in range(2):
            headers = {"Accept": accept}
            authorization = await self._auth.header()
            if authorization is not None:
                headers["Authorization"] = authorization
            reply = await self._transport.exchange(method, url, headers=headers)
            if reply.status != HTTPStatus.UNAUTHORIZED:
                return reply
            challenges = self._challenges(reply)
            if challenge_round == 1 or not challenges:
                break
            self._auth.challenged(challenges)
        raise RegistryAuthError(
            f"{self._where}: the registry refused {self._auth.identity()} (401)"
            f"{_error_detail(reply.body)}"
        )

    def _challenges(self, reply: Reply) -> list[Challenge]:
        try:
            return parse_header_values(reply.headers.getall("WWW-Authenticate", []))
        except ChallengeSyntaxError as error:
            raise self._protocol_error(f"unreadable WWW-Authenticate header: {error}") from None

    def _tags_page(self, reply: Reply) -> list[str]:
        try:
            document: Any = json.loads(reply.body)
        except ValueError as error:
            raise self._protocol_error(f"the tag list is not valid JSON: {error}") from None
        if not isinstance(document, dict) or "tags" not in document:
            raise self._protocol_error("the tag list has no 'tags' array")
        tags = document["tags"]
        if tags is None:
            return []
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise self._protocol_error("the tag list has no 'tags' array of strings")
        return tags

    async def _fetch_token(
        self, challenge: Challenge, credentials: Credentials | None
    ) -> TokenGrant:
        return await fetch_token(
            self._transport,
            challenge,
            credentials,
            scope=f"repository:{self.reference.path}:pull",
            where=self._where,
            identity=self._auth.identity,
        )
