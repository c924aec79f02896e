"""Notifications for operators without Prometheus: every transaction's end state (upgrade,
rollback, restore) and every failed scheduled backup, sent through apprise to the URLs of
``[notifications] urls_file``.

Rules: sending never blocks or fails the caller (it runs in a task, off the event loop, with a
time limit); a failure to notify is logged and counted in ``counts`` ("sent"/"failed", one per
URL), never raised; a URL is never logged (they carry tokens), only its position in the file.
Only transactions that end after the daemon started are sent: ``OutcomeWatch`` starts at the
journal's last finished transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import apprise

from specivod import redaction
from specivod.domain.states import State
from specivod.engine.journal import Journal, Kind, Transaction
from specivod.settings import NotificationSettings

log = logging.getLogger(__name__)

RESULTS = ("sent", "failed")


def succeeded(transaction: Transaction) -> bool:
    """An upgrade succeeds in SUCCEEDED; a rollback or a restore in ROLLED_BACK (the deployment
    is back on the version and data asked for)."""
    wanted = State.SUCCEEDED if transaction.kind is Kind.UPGRADE else State.ROLLED_BACK
    return transaction.state is wanted


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    failure: bool


Send = Callable[[Message, str, float], Awaitable[bool]]
"""Send one message to one URL within a time limit; True when it was delivered."""


def outcome_message(transaction: Transaction) -> Message:
    versions = f"{transaction.from_version or '?'} → {transaction.to_version or '?'}"
    title = f"specivod: {transaction.kind.value} #{transaction.id} {transaction.state.name}"
    lines = [
        f"{transaction.kind.value} #{transaction.id} ({transaction.trigger}) {versions} "
        f"ended {transaction.state.name}.",
    ]
    if transaction.reason:
        lines.append(f"Reason: {transaction.reason}")
    if transaction.state is State.ROLLBACK_FAILED:
        lines.append("A person is needed: repair the deployment, then run specivod resolve.")
    elif transaction.restored:
        lines.append("The database and data dir were restored from the backup.")
    if transaction.duration_seconds is not None:
        lines.append(f"Took {transaction.duration_seconds:.0f} s.")
    return Message(title, "\n".join(lines), not succeeded(transaction))


def backup_failed_message(problem: str) -> Message:
    return Message(
        "specivod: scheduled backup FAILED",
        f"The scheduled backup failed, no backup was kept: {problem}",
        failure=True,
    )


def _apprise_send_now(message: Message, url: str, timeout: float) -> bool:
    sender = apprise.Apprise()
    if not sender.add(url):
        log.warning("apprise does not understand a notification URL")
        return False
    kind = apprise.NotifyType.FAILURE if message.failure else apprise.NotifyType.SUCCESS
    return bool(sender.notify(body=message.body, title=message.title, notify_type=kind))


async def apprise_send(message: Message, url: str, timeout: float) -> bool:
    return await asyncio.wait_for(
        asyncio.to_thread(_apprise_send_now, message, url, timeout), timeout
    )


class Notifications:
    """Sends messages to the configured URLs in background tasks and counts the results."""

    def __init__(
        self, settings: Callable[[], NotificationSettings], send: Send = apprise_send
    ) -> None:
        self._settings = settings
        self._send = send
        self.counts: Counter[str] = Counter(dict.fromkeys(RESULTS, 0))
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, message: Message) -> None:
        """Send ``message`` in the background (a no-op when no URL is configured)."""
        settings = self._settings()
        urls = settings.urls()
        if not urls:
            return
        try:
            task = asyncio.get_running_loop().create_task(self.send(message, settings))
        except RuntimeError:
            log.warning("notification %r not sent: no event loop", message.title)
            self.counts["failed"] += len(urls)
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send(self, message: Message, settings: NotificationSettings) -> None:
        urls = settings.urls()
        timeout = settings.timeout.total_seconds()
        for number, url in enumerate(urls, start=1):
            try:
                delivered = await asyncio.wait_for(self._send(message, url, timeout), timeout)
                problem = "" if delivered else "not delivered"
            except TimeoutError:
                delivered, problem = False, f"no answer in {timeout:.0f} s"
            except Exception as error:  # a notification must never fail anything
                delivered, problem = False, f"{type(error).__name__}: {error}"
            self.counts["sent" if delivered else "failed"] += 1
            if not delivered:
                log.warning(
                    "notification %r to URL %d of %d in %s failed: %s",
                    message.title,
                    number,
                    len(urls),
                    settings.urls_file.path if settings.urls_file else "?",
                    redaction.redact(problem),
                )

    async def drain(self) -> None:
        """Wait for the notifications being sent (on shutdown, and in tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class OutcomeWatch:
    """The transactions that ended since the last look, oldest first."""

    def __init__(self, journal: Journal) -> None:
        latest = journal.latest()
        if latest is None:
            self._seen = 0
        else:
            self._seen = latest.id if latest.state.is_terminal else latest.id - 1

    def ended(self, journal: Journal) -> list[Transaction]:
        newer = sorted((t for t in journal.history(50) if t.id > self._seen), key=lambda t: t.id)
        ended = []
        for transaction in newer:
            if not transaction.state.is_terminal:
                break
            ended.append(transaction)
            self._seen = transaction.id
        return ended
