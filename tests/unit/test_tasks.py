"""The root-task supervisor: one death stops everything with one log line and a non-zero code; a
stop request lets tasks finish, then cancels the stragglers; signals only resolve the future."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import pytest

from specivod.daemon.tasks import OK, TASK_DIED, stop_on_signals, supervise


class Forever:
    """A well-behaved root task: runs until cancelled or until the stop future resolves."""

    def __init__(self, stop: asyncio.Future[Any] | None = None, *, ignores_stop: bool = False):
        self.stop = stop
        self.ignores_stop = ignores_stop
        self.started = asyncio.Event()
        self.cancelled = False
        self.finished = False

    async def __call__(self) -> None:
        self.started.set()
        try:
            if self.stop is not None and not self.ignores_stop:
                await asyncio.shield(self.stop)
                self.finished = True
                return
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_a_dying_task_stops_the_others_with_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    poller, web = Forever(), Forever()

    async def scheduler() -> None:
        await poller.started.wait()
        raise RuntimeError("journal is gone")

    stop: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    with caplog.at_level(logging.INFO, logger="specivod.daemon.tasks"):
        code = await supervise({"poller": poller, "scheduler": scheduler, "web": web}, stop)
    assert code == TASK_DIED
    assert poller.cancelled
    assert web.cancelled
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["task scheduler died: RuntimeError: journal is gone; stopping the daemon"]


async def test_a_task_that_returns_is_a_death_too(caplog: pytest.LogCaptureFixture) -> None:
    other = Forever()

    async def quits() -> None:
        return None

    stop: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    assert await supervise({"watchdog": quits, "web": other}, stop) == TASK_DIED
    assert other.cancelled
    assert "task watchdog ended unexpectedly; stopping the daemon" in caplog.text


async def test_a_stop_lets_tasks_finish_on_their_own() -> None:
    stop: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    poller, web = Forever(stop), Forever(stop)
    running = asyncio.create_task(supervise({"poller": poller, "web": web}, stop, grace=5))
    await poller.started.wait()
    stop.set_result("SIGTERM")
    assert await running == OK
    assert poller.finished
    assert web.finished
    assert not poller.cancelled


async def test_a_task_that_ignores_the_stop_is_cancelled_after_the_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    stubborn, polite = Forever(stop, ignores_stop=True), Forever(stop)
    running = asyncio.create_task(
        supervise({"stubborn": stubborn, "polite": polite}, stop, grace=0.05)
    )
    await stubborn.started.wait()
    stop.set_result("SIGTERM")
    assert await running == OK
    assert stubborn.cancelled
    assert polite.finished
    assert "task stubborn did not stop within" in caplog.text


async def test_a_task_that_fails_while_stopping_makes_the_exit_non_zero() -> None:
    stop: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def flushes_badly() -> None:
        await asyncio.shield(stop)
        await asyncio.sleep(0.01)
        raise OSError("disk full")

    running = asyncio.create_task(supervise({"journal": flushes_badly}, stop, grace=5))
    await asyncio.sleep(0)
    stop.set_result("SIGTERM")
    assert await running == TASK_DIED


async def test_tasks_are_named() -> None:
    names: list[str] = []
    stop: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def record() -> None:
        task = asyncio.current_task()
        assert task is not None
        names.append(task.get_name())
        await asyncio.shield(stop)

    running = asyncio.create_task(supervise({"poller": record}, stop))
    await asyncio.sleep(0.01)
    stop.set_result("test")
    await running
    assert names == ["specivod:poller"]


async def test_a_signal_only_resolves_the_future() -> None:
    stop: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    remove = stop_on_signals(stop, [signal.SIGUSR1])
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert await asyncio.wait_for(stop, 5) == "SIGUSR1"
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0.01)
        assert stop.result() == "SIGUSR1"
    finally:
        remove()


async def test_a_signal_stops_the_supervisor_gracefully() -> None:
    stop: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    worker = Forever(stop)
    remove = stop_on_signals(stop, [signal.SIGUSR2])
    try:
        running = asyncio.create_task(supervise({"worker": worker}, stop, grace=5))
        await worker.started.wait()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert await asyncio.wait_for(running, 5) == OK
        assert worker.finished
    finally:
        remove()
