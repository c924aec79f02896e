"""Named, guarded root tasks: the daemon is alive only while all of them are.

Rule (kopf's reactor): every long-running job is a named root task. None of them may end on its
own: when one returns or raises, the others are cancelled, one log line names the task and the
error, and ``supervise`` returns a non-zero exit code so that systemd restarts the daemon. A stop
request is just a future being resolved (signal handlers do nothing else); the tasks then get a
grace period to finish on their own, observing the same future, before they are cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

OK = 0
TASK_DIED = 1

TaskFactory = Callable[[], Coroutine[Any, Any, None]]


async def supervise(
    tasks: Mapping[str, TaskFactory],
    stop: asyncio.Future[Any],
    *,
    grace: float = 30.0,
) -> int:
    """Run every task until one dies (→ ``TASK_DIED``) or ``stop`` resolves (→ ``OK``, unless a
    task fails while stopping)."""
    running = {
        asyncio.create_task(factory(), name=f"specivod:{name}"): name
        for name, factory in tasks.items()
    }
    done, _ = await asyncio.wait([*running, stop], return_when=asyncio.FIRST_COMPLETED)
    died = [task for task in running if task in done]
    if died:
        _report_death(running[died[0]], died[0])
        await _cancel(running)
        return TASK_DIED
    log.info("stopping (%s)", _reason(stop))
    _, late = await asyncio.wait(running, timeout=grace) if running else (set(), set())
    for task in late:
        log.warning("task %s did not stop within %.0f s; cancelling it", running[task], grace)
    await _cancel(running)
    failed = [task for task in running if _failure(task) is not None]
    for task in failed:
        log.error("task %s failed while stopping: %s", running[task], _describe(_failure(task)))
    return TASK_DIED if failed else OK


def _report_death(name: str, task: asyncio.Task[None]) -> None:
    error = _failure(task)
    if error is None:
        log.error("task %s ended unexpectedly; stopping the daemon", name)
    else:
        log.error("task %s died: %s; stopping the daemon", name, _describe(error))
        log.debug("task %s traceback", name, exc_info=error)


async def _cancel(tasks: Iterable[asyncio.Task[None]]) -> None:
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def _failure(task: asyncio.Task[None]) -> BaseException | None:
    if not task.done() or task.cancelled():
        return None
    return task.exception()


def _describe(error: BaseException | None) -> str:
    return f"{type(error).__name__}: {error}" if error is not None else "no error"


def _reason(stop: asyncio.Future[Any]) -> str:
    if stop.cancelled() or stop.exception() is not None:
        return "stop requested"
    return str(stop.result())


def stop_on_signals(
    stop: asyncio.Future[Any],
    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> Callable[[], None]:
    """Resolve ``stop`` with the signal's name on the first of ``signals``; returns the undo."""
    loop = asyncio.get_running_loop()
    installed = list(signals)

    def resolve(received: signal.Signals) -> None:
        if not stop.done():
            stop.set_result(received.name)

    for each in installed:
        loop.add_signal_handler(each, resolve, each)

    def remove() -> None:
        for each in installed:
            loop.remove_signal_handler(each)

    return remove
