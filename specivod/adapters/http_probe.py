"""HTTP requests for health and smoke checks, over one aiohttp session."""

from __future__ import annotations

from types import TracebackType

import aiohttp

from specivod.engine.ports import HttpAnswer

_BODY_LIMIT = 1 << 20


class AiohttpProbe:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def request(self, method: str, url: str, timeout: float) -> HttpAnswer:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.request(
                method, url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
            ) as response:
                body = await response.content.read(_BODY_LIMIT)
                return HttpAnswer(response.status, body.decode(errors="replace"))
        except (aiohttp.ClientError, TimeoutError) as error:
            raise OSError(f"{method} {url}: {error or type(error).__name__}") from None

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
