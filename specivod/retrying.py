"""Every retry specivod does goes through one policy object, built on tenacity.

Callers say *what* is retryable; the policy says how many attempts and how long to wait. A server's
``Retry-After`` is honoured as asked when it fits in ``max_wait``; a longer one ends the retrying at
once (asking again early would only be refused again). Tests pass ``RetryPolicy(...,
sleep=recorder)`` to see the waits without spending them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

Sleep = Callable[[float], Awaitable[None]]


class RetryAfter(Exception):
    """Raised by an attempt that the server asked to repeat after ``delay`` seconds."""

    def __init__(self, delay: float, cause: Exception) -> None:
        super().__init__(str(cause))
        self.delay = delay
        self.cause = cause


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    initial_wait: timedelta = timedelta(milliseconds=500)
    max_wait: timedelta = timedelta(seconds=30)
    sleep: Sleep = field(default=asyncio.sleep, compare=False)

    def waits_for(self, error: RetryAfter) -> bool:
        """Whether the wait ``error`` asks for is one this policy spends (at most ``max_wait``):
        trying again sooner than a server said would only earn another refusal."""
        return error.delay <= self.max_wait.total_seconds()

    def _stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.attempts:
            return True
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        return isinstance(error, RetryAfter) and not self.waits_for(error)

    def _wait(self, state: RetryCallState) -> float:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, RetryAfter):
            return max(error.delay, 0.0)
        backoff = wait_exponential_jitter(
            multiplier=self.initial_wait.total_seconds(),
            max=self.max_wait.total_seconds(),
            jitter=self.initial_wait.total_seconds(),
        )
        return float(backoff(state))

    def retrying(self, retryable: Callable[[BaseException], bool]) -> AsyncRetrying:
        """An ``AsyncRetrying`` that retries errors for which ``retryable`` is true (and every
        ``RetryAfter`` whose wait it spends), then re-raises the last error."""
        return AsyncRetrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, RetryAfter) or retryable(e)),
            sleep=self.sleep,
            reraise=True,
        )


def at_fixed_interval(
    attempts: int,
    interval: timedelta,
    retry_on: type[Exception],
    sleep: Sleep = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> AsyncRetrying:
    """Poll: up to ``attempts`` tries at a fixed rate, one every ``interval`` (the time a try
    takes counts against the pause), while ``retry_on`` is raised. All tries fit in
    ``(attempts - 1) × interval`` plus the last try."""
    period = interval.total_seconds()
    started = monotonic()

    def until_next_slot(state: RetryCallState) -> float:
        return max(0.0, started + state.attempt_number * period - monotonic())

    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=until_next_slot,
        retry=retry_if_exception_type(retry_on),
        sleep=sleep,
        reraise=True,
    )


async def no_sleep(_seconds: float) -> None:
    """A sleep that returns at once, for tests."""
