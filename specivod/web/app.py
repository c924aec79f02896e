"""The aiohttp application: ``GET /metrics``, ``GET /healthz``, ``GET /api/v1/status`` and
``POST /api/v1/alertmanager``.

Rule: every request is answered at once from injected callables; a rollback an alert asks for is
started as a background task the app keeps a reference to, and awaited on cleanup. An accepted
rollback that finds another specivod operation holding the host lock (a manual command) waits for
it and tries again, because Alertmanager repeats an alert only after hours; one still waiting at
cleanup is given up. Bad input gets a 4xx naming what was wrong, never a 5xx; every webhook answer
is counted by outcome.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias, TypeVar, cast

from aiohttp import web
from pydantic import ValidationError

from specivod.domain.alerts import AlertKey, Matcher, parse_matcher_lines
from specivod.domain.errors import LockedError
from specivod.settings import Settings
from specivod.web.webhook import (
    LastUpgrade,
    Outcome,
    RollbackRequest,
    SeenAlerts,
    WebhookPayload,
    decide,
    new_webhook_counts,
)

log = logging.getLogger(__name__)

_T = TypeVar("_T")
MaybeAwaitable: TypeAlias = _T | Awaitable[_T]
MetricsRenderer = Callable[[], MaybeAwaitable[bytes]]
StatusProvider = Callable[[], MaybeAwaitable[Mapping[str, Any]]]
LastUpgradeProvider = Callable[[], MaybeAwaitable[LastUpgrade | None]]
RollbackStarter = Callable[[RollbackRequest], Awaitable[None]]

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_MAX_BODY = 1 << 20
BUSY_RETRY_SECONDS = 2.0
ROLLBACK_TASKS = web.AppKey("rollback_tasks", set[asyncio.Task[None]])
WEBHOOK_COUNTS = web.AppKey("webhook_counts", Counter[str])
SEEN_ALERTS = web.AppKey("seen_alerts", SeenAlerts)


@dataclass(frozen=True)
class WebhookSettings:
    token: str | None
    matchers: tuple[Matcher, ...]
    watch_period: timedelta
    max_body_bytes: int = DEFAULT_MAX_BODY

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSettings:
        token = settings.http.token
        return cls(
            token=token.get_secret_value() if token is not None else None,
            matchers=parse_matcher_lines(settings.alertmanager.matchers),
            watch_period=settings.alertmanager.watch_period,
        )


async def _resolve(value: MaybeAwaitable[_T]) -> _T:
    if inspect.isawaitable(value):
        return cast(_T, await value)
    return value


class _Answer(Exception):
    """Ends a webhook request early with an outcome and a status."""

    def __init__(
        self, outcome: Outcome, status: int, reason: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(reason)
        self.outcome, self.status, self.reason, self.headers = outcome, status, reason, headers


class _Webhook:
    def __init__(
        self,
        *,
        settings: WebhookSettings,
        last_upgrade: LastUpgradeProvider,
        start_rollback: RollbackStarter,
        now: Callable[[], datetime],
        counts: Counter[str],
        seen: SeenAlerts,
        tasks: set[asyncio.Task[None]],
        busy_retry_seconds: float = BUSY_RETRY_SECONDS,
    ) -> None:
        self._settings = settings
        self._last_upgrade = last_upgrade
        self._start_rollback = start_rollback
        self._now = now
        self._counts = counts
        self._seen = seen
        self._tasks = tasks
        self._busy_retry_seconds = busy_retry_seconds
        self._waiting: set[asyncio.Task[Any]] = set()
        self._resolved: set[AlertKey] = set()
        """Alerts that resolved while a rollback they triggered waited for the host lock."""

    async def handle(self, request: web.Request) -> web.Response:
        try:
            answer = await self._answer(request)
        except _Answer as early:
            answer = early
        except Exception:
            log.exception("alertmanager webhook: internal error")
            answer = _Answer(Outcome.ERROR, 503, "internal error; Alertmanager will retry")
        self._counts[answer.outcome.value] += 1
        level = logging.WARNING if answer.outcome is Outcome.ACCEPTED else logging.INFO
        log.log(level, "alertmanager webhook: %s (%s)", answer.outcome.value, answer.reason)
        return web.json_response(
            {"result": answer.outcome.value, "reason": answer.reason},
            status=answer.status,
            headers=answer.headers,
        )

    async def _answer(self, request: web.Request) -> _Answer:
        self._authorize(request)
        payload = await self._payload(request)
        if self._waiting:
            self._resolved.update(a.key for a in payload.alerts if a.status == "resolved")
        decision = decide(
            payload,
            matchers=self._settings.matchers,
            watch_period=self._settings.watch_period,
            last_upgrade=await _resolve(self._last_upgrade()),
            now=self._now(),
            seen=self._seen,
        )
        if decision.request is None:
            return _Answer(decision.outcome, 200, decision.reason)
        self._seen.record(decision.request)
        task = asyncio.create_task(self._rollback(decision.request), name="alertmanager-rollback")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return _Answer(decision.outcome, 202, decision.reason)

    def _authorize(self, request: web.Request) -> None:
        expected = self._settings.token
        if expected is None:
            raise _Answer(Outcome.DISABLED, 403, "webhook disabled: set http.token_file")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            challenge = {"WWW-Authenticate": 'Bearer realm="specivod"'}
            raise _Answer(Outcome.UNAUTHORIZED, 401, "bearer token required", challenge)
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            challenge = {"WWW-Authenticate": 'Bearer realm="specivod", error="invalid_token"'}
            raise _Answer(Outcome.UNAUTHORIZED, 401, "wrong bearer token", challenge)

    async def _payload(self, request: web.Request) -> WebhookPayload:
        content_type = request.content_type
        if content_type != "application/json" and not content_type.endswith("+json"):
            reason = f"content type {content_type} is not application/json"
            raise _Answer(Outcome.UNSUPPORTED_MEDIA_TYPE, 415, reason)
        limit = self._settings.max_body_bytes
        too_large = _Answer(Outcome.TOO_LARGE, 413, f"body larger than {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as error:
            raise _Answer(Outcome.BAD_REQUEST, 400, f"malformed JSON: {error}") from None
        try:
            return WebhookPayload.model_validate(document)
        except ValidationError as error:
            raise _Answer(Outcome.BAD_REQUEST, 400, _schema_errors(error)) from None

    async def _rollback(self, request: RollbackRequest) -> None:
        try:
            await self._roll_back_when_free(request)
        finally:
            if not self._waiting:
                self._resolved.clear()

    async def _roll_back_when_free(self, request: RollbackRequest) -> None:
        said = False
        while True:
            try:
                await self._start_rollback(request)
                return
            except LockedError as busy:
                if not said:
                    log.warning(
                        "rollback of %s for alerts waits: %s", request.upgrade.version, busy
                    )
                    said = True
            except Exception:
                # Forget the alerts, so that Alertmanager's next repeat can try again.
                self._seen.forget(request)
                log.exception("rollback of %s for alerts failed to start", request.upgrade.version)
                return
            await self._wait_before_retrying()
            if (why := self._no_longer_wanted(request)) is not None:
                log.warning("rollback of %s for alerts dropped: %s", request.upgrade.version, why)
                return

    def _no_longer_wanted(self, request: RollbackRequest) -> str | None:
        """Why a rollback that waited for the host lock must not run now, if it must not: its
        alerts all resolved meanwhile, or the watch period after the upgrade ended."""
        if request.keys and all(key in self._resolved for key in request.keys):
            return "its alerts resolved while it waited"
        if self._now() > request.upgrade.finished_at + self._settings.watch_period:
            return "the watch period after the upgrade ended while it waited"
        return None

    async def _wait_before_retrying(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            await asyncio.sleep(self._busy_retry_seconds)
        finally:
            self._waiting.discard(task)

    def give_up_waiting(self) -> None:
        """Cancel the rollbacks that wait for the host lock (none of them has started)."""
        for task in self._waiting:
            task.cancel()


def _schema_errors(error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in each['loc']) or 'body'}: {each['msg']}"
        for each in error.errors()[:5]
    ]
    return "not an Alertmanager v4 payload: " + "; ".join(problems)


def make_app(
    *,
    webhook: WebhookSettings,
    render_metrics: MetricsRenderer,
    status: StatusProvider,
    last_upgrade: LastUpgradeProvider,
    start_rollback: RollbackStarter,
    now: Callable[[], datetime],
    alive: Callable[[], bool] = lambda: True,
    counts: Counter[str] | None = None,
    seen: SeenAlerts | None = None,
    busy_retry_seconds: float = BUSY_RETRY_SECONDS,
) -> web.Application:
    """The daemon's web application. ``counts`` feeds ``alertmanager_webhooks_total``; ``seen``
    may be loaded from the journal so that a restart does not forget handled alerts."""
    app = web.Application(client_max_size=webhook.max_body_bytes)
    tasks: set[asyncio.Task[None]] = set()
    app[ROLLBACK_TASKS] = tasks
    app[WEBHOOK_COUNTS] = counts if counts is not None else new_webhook_counts()
    app[SEEN_ALERTS] = seen if seen is not None else SeenAlerts()
    hook = _Webhook(
        settings=webhook,
        last_upgrade=last_upgrade,
        start_rollback=start_rollback,
        now=now,
        counts=app[WEBHOOK_COUNTS],
        seen=app[SEEN_ALERTS],
        tasks=tasks,
        busy_retry_seconds=busy_retry_seconds,
    )

    async def metrics(_: web.Request) -> web.Response:
        text: bytes = await _resolve(render_metrics())
        return web.Response(body=text, headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def healthz(_: web.Request) -> web.Response:
        if alive():
            return web.Response(text="ok\n")
        return web.Response(text="unhealthy\n", status=503)

    async def api_status(_: web.Request) -> web.Response:
        return web.json_response(dict(await _resolve(status())), dumps=_dumps)

    async def finish_rollbacks(_: web.Application) -> None:
        hook.give_up_waiting()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/status", api_status)
    app.router.add_post("/api/v1/alertmanager", hook.handle)
    app.on_cleanup.append(finish_rollbacks)
    return app


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def listen_address(listen: str) -> tuple[str, int]:
    """``127.0.0.1:9717`` or ``[::1]:9717`` → host and port."""
    host, _, port = listen.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


async def serve(app: web.Application, listen: str) -> web.AppRunner:
    """Listen on ``http.listen``; the caller calls ``runner.cleanup()`` on the way out."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = listen_address(listen)
    await web.TCPSite(runner, host, port).start()
    return runner
