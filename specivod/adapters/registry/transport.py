"""One HTTP exchange with retries: connection errors, timeouts, cut-short bodies, 5xx and 429 are
retried through the shared ``RetryPolicy``; when the attempts run out the last failure becomes a
typed ``RegistryError``. Other statuses are returned to the caller, body read in full."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from specivod import __version__
from specivod.adapters.clock import Clock
from specivod.domain.errors import (
    RegistryError,
    RegistryProtocolError,
    RegistryRateLimited,
    RegistryTimeout,
    RegistryUnavailable,
)
from specivod.retrying import RetryAfter, RetryPolicy

log = logging.getLogger(__name__)

USER_AGENT = f"specivod/{__version__}"


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    url: URL
    headers: CIMultiDictProxy[str]
    body: bytes
    next_link: URL | None
    """``Link: <...>; rel="next"``, resolved against ``url``."""


class _ServerError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"answered {status} {reason}".rstrip())
        self.status = status


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date; None if absent or
    unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - now).total_seconds(), 0.0)


def _retryable(error: BaseException) -> bool:
    if isinstance(error, aiohttp.ClientSSLError | aiohttp.InvalidURL):
        return False
    return isinstance(error, _ServerError | TimeoutError | aiohttp.ClientError | OSError)


def _next_link(response: aiohttp.ClientResponse) -> URL | None:
    try:
        link = response.links.get("next")
        if link is None:
            return None
        target = link.get("url")
        if target is None:
            return None
        return response.url.join(URL(str(target)))
    except ValueError as error:
        raise RegistryProtocolError(
            f"{response.url}: cannot read the Link header {response.headers.get('Link')!r}: {error}"
        ) from None


class Transport:
    """An aiohttp session used for every exchange with one registry (and its token endpoint)."""

    def __init__(self, *, where: str, timeout: float, retry: RetryPolicy, clock: Clock) -> None:
        self._where = where
        self._timeout = timeout
        self._retry = retry
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0

    def _error(self, kind: type[RegistryError], detail: str) -> RegistryError:
        return kind(f"{self._where}: {detail}")

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _once(
        self, method: str, url: URL, headers: Mapping[str, str], data: Mapping[str, str] | None
    ) -> Reply:
        session = self._open_session()
        self.requests += 1
        log.debug("%s %s", method, url)
        async with session.request(
            method, url, headers=headers, data=data, allow_redirects=True
        ) as response:
            if response.status == HTTPStatus.TOO_MANY_REQUESTS or response.status >= 500:
                await response.read()
                failure = _ServerError(response.status, response.reason or "")
                delay = retry_after_seconds(response.headers.get("Retry-After"), self._clock.now())
                if delay is not None:
                    raise RetryAfter(delay, failure)
                raise failure
            body = await response.read()
            return Reply(
                status=response.status,
                reason=response.reason or "",
                url=response.url,
                headers=response.headers,
                body=body,
                next_link=_next_link(response),
            )

    async def exchange(
        self,
        method: str,
        url: URL,
        *,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> Reply:
        """Send until an answer other than 5xx/429 arrives or the attempts run out."""
        attempts = 0
        target = f"{method} {url.with_query(None)}"
        try:
            async for attempt in self._retry.retrying(_retryable):
                with attempt:
                    attempts += 1
                    return await self._once(method, url, headers or {}, data)
        except RetryAfter as error:
            if not self._retry.waits_for(error):
                raise self._too_long(error, target, attempts) from None
            raise self._failed(error.cause, target, attempts) from None
        except (_ServerError, TimeoutError, aiohttp.ClientError, OSError) as error:
            raise self._failed(error, target, attempts) from None
        raise AssertionError("unreachable: the retry loop returns or raises")

    def _too_long(self, error: RetryAfter, target: str, attempts: int) -> RegistryError:
        """The server asked for a longer wait than the retry policy spends: given up at once."""
        limited = isinstance(error.cause, _ServerError) and error.cause.status == 429
        kind = RegistryRateLimited if limited else RegistryUnavailable
        return self._error(
            kind,
            f"{target} {error.cause} with Retry-After {error.delay:g}s, longer than the "
            f"{self._retry.max_wait.total_seconds():g}s specivod waits; not retried "
            f"({attempts} attempt{'s' if attempts != 1 else ''})",
        )

    def _failed(self, error: BaseException, target: str, attempts: int) -> RegistryError:
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if isinstance(error, _ServerError):
            if error.status == HTTPStatus.TOO_MANY_REQUESTS:
                return self._error(
                    RegistryRateLimited,
                    f"{target} kept answering 429 Too Many Requests ({tries})",
                )
            return self._error(RegistryUnavailable, f"{target} {error} ({tries})")
        if isinstance(error, TimeoutError | asyncio.TimeoutError):
            return self._error(
                RegistryTimeout, f"{target}: no answer within {self._timeout:g}s ({tries})"
            )
        if isinstance(error, aiohttp.ClientPayloadError):
            return self._error(
                RegistryProtocolError, f"{target}: the answer was cut short ({tries})"
            )
        if isinstance(error, aiohttp.ClientSSLError):
            return self._error(RegistryUnavailable, f"{target}: TLS failed: {error}")
        if isinstance(error, aiohttp.ClientResponseError):
            return self._error(
                RegistryProtocolError, f"{target}: malformed answer: {error.message} ({tries})"
            )
        reason = str(error) or type(error).__name__
        return self._error(RegistryUnavailable, f"{target}: cannot connect: {reason} ({tries})")
