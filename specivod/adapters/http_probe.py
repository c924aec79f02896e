"""HTTP requests for health checks and smoke steps, over one aiohttp session. A smoke request's
failure does not quote its URL: a rendered URL may hold a captured token."""

from __future__ import annotations

from types import TracebackType

import aiohttp

from specivod.engine.ports import HttpAnswer
from specivod.engine.smoke_steps import HttpRequest

_BODY_LIMIT = 1 << 20


class AiohttpProbe:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def request(self, method: str, url: str, timeout: float) -> HttpAnswer:
        try:
            return await self._send(HttpRequest(method, url), timeout)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise OSError(f"{method} {url}: {error or type(error).__name__}") from None

    async def send(self, request: HttpRequest, timeout: float) -> HttpAnswer:
        try:
            return await self._send(request, timeout)
        except TimeoutError:
            raise OSError(f"no answer within {timeout:g}s") from None
        except aiohttp.ClientConnectionError as error:
            raise OSError(f"connection failed ({type(error).__name__})") from None
        except (aiohttp.ClientError, ValueError) as error:
            raise OSError(f"request failed ({type(error).__name__})") from None

    async def _send(self, request: HttpRequest, timeout: float) -> HttpAnswer:
        if self._session is None:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        async with self._session.request(
            request.method,
            request.url,
            headers=dict(request.headers),
            data=request.body,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            body = await response.content.read(_BODY_LIMIT)
            return HttpAnswer(response.status, body.decode(errors="replace"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AiohttpProbe:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
