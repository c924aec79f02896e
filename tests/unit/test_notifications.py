"""Notifications of transaction outcomes and failed scheduled backups: the URLs file is read as a
secret (each URL masked in logs); each URL gets each message, counted sent/failed; a send that
raises or hangs is logged (without its URL) and counted, never raised; only transactions that end
after the daemon started are sent, each once; apprise really posts to a json:// receiver."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from specivod import redaction
from specivod.daemon.service import Daemon
from specivod.domain.states import RestoreMode, State
from specivod.engine.journal import Journal, Kind, Transaction
from specivod.notify_outcomes import (
    Message,
    Notifications,
    OutcomeWatch,
    apprise_send,
    backup_failed_message,
    outcome_message,
)
from specivod.settings import NotificationSettings, Settings
from tests.support.json_receiver import JsonReceiver, json_receiver
from tests.support.ports import free_port
from tests.unit.fakes import FakeClock

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
URL = "ntfy://s3cr3t-topic-token@127.0.0.1/specivo"
OTHER = "json://127.0.0.1:9/hook"
SUCCESS = (State.BACKING_UP, State.PULLING, State.PINNED, State.STARTING, State.VERIFYING)


def urls_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "notify.urls"
    path.write_text("\n".join(lines) + "\n")
    return path


def notification_settings(tmp_path: Path, *urls: str, timeout: str = "5s") -> NotificationSettings:
    return NotificationSettings(urls_file=urls_file(tmp_path, *urls), timeout=timeout)


class FakeSend:
    """Answers per URL: True, False, an exception to raise, or "hang"."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.answers = answers or {}
        self.sent: list[tuple[str, Message]] = []

    async def __call__(self, message: Message, url: str, timeout: float) -> bool:
        answer = self.answers.get(url, True)
        if answer == "hang":
            await asyncio.sleep(timeout * 10)
        if isinstance(answer, Exception):
            raise answer
        self.sent.append((url, message))
        return bool(answer)


def test_the_urls_file_is_read_as_a_secret(tmp_path: Path) -> None:
    found = notification_settings(tmp_path, "# ops channel", URL, "", f"  {OTHER}  ")

    assert found.urls() == [URL, OTHER]
    assert URL not in redaction.redact(f"sending to {URL}")
    assert found.model_dump(mode="json")["urls_file"] == str(tmp_path / "notify.urls")


def test_a_file_without_urls_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds no URL"):
        NotificationSettings(urls_file=urls_file(tmp_path, "# nothing yet"))


async def test_each_url_gets_each_message_and_results_are_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    found = notification_settings(tmp_path, URL, OTHER, "mailto://a:b@c", timeout="1s")
    send = FakeSend(
        {OTHER: RuntimeError(f"connection refused to {OTHER}"), "mailto://a:b@c": "hang"}
    )
    notifications = Notifications(lambda: found, send)

    with caplog.at_level(logging.WARNING):
        notifications.post(backup_failed_message("pg_dump exited 1"))
        await notifications.drain()

    assert [url for url, _ in send.sent] == [URL]
    assert notifications.counts == {"sent": 1, "failed": 2}
    assert "URL 2 of 3" in caplog.text and "URL 3 of 3" in caplog.text
    assert "no answer in 1 s" in caplog.text
    for record in caplog.records:
        assert "s3cr3t-topic-token" not in record.getMessage()
        assert OTHER not in record.getMessage()


async def test_without_urls_nothing_is_sent_or_counted() -> None:
    notifications = Notifications(NotificationSettings, FakeSend())
    notifications.post(backup_failed_message("x"))
    await notifications.drain()
    assert notifications.counts == {"sent": 0, "failed": 0}


def finish(journal: Journal, transaction: Transaction, states: tuple[State, ...]) -> Transaction:
    for state in states:
        transaction = journal.advance(transaction, state, now=NOW + timedelta(minutes=3))
    return transaction


def test_only_outcomes_after_the_start_are_reported_each_once(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        old = journal.begin(Kind.UPGRADE, trigger="cli", from_version="1", to_version="2", now=NOW)
        finish(journal, old, (State.ABORTED,))
        left = journal.begin(Kind.UPGRADE, trigger="cli", from_version="1", to_version="3", now=NOW)
        watch = OutcomeWatch(journal)

        assert watch.ended(journal) == []
        recovered = finish(journal, left, (*SUCCESS, State.SUCCEEDED))
        assert watch.ended(journal) == [recovered]
        assert watch.ended(journal) == []


def test_an_outcome_says_what_ended_and_what_to_do() -> None:
    with_reason = Transaction(
        id=7,
        kind=Kind.ROLLBACK,
        trigger="alertmanager",
        restore_mode=RestoreMode.AUTO,
        from_version="0.1.11",
        to_version="0.1.10",
        state=State.ROLLBACK_FAILED,
        backup_id=None,
        fingerprint_before=None,
        fingerprint_after=None,
        restored=False,
        data_aside=None,
        safety_backup_id=None,
        earlier_safety_backups=None,
        serving=None,
        reason="SpecivoDown firing",
        started_at=NOW,
        updated_at=NOW,
        finished_at=NOW + timedelta(seconds=42),
    )

    message = outcome_message(with_reason)

    assert message.failure
    assert message.title == "specivod: rollback #7 ROLLBACK_FAILED"
    assert "0.1.11 → 0.1.10" in message.body and "SpecivoDown firing" in message.body
    assert "specivod resolve" in message.body and "Took 42 s" in message.body


def test_a_restore_or_rollback_succeeds_in_rolled_back_an_upgrade_in_succeeded(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path) as journal:
        upgrade = journal.begin(
            Kind.UPGRADE, trigger="cli", from_version="1", to_version="2", now=NOW
        )
        upgrade = finish(journal, upgrade, (*SUCCESS, State.SUCCEEDED))
        failed = journal.begin(
            Kind.UPGRADE, trigger="cli", from_version="2", to_version="3", now=NOW
        )
        failed = finish(
            journal,
            failed,
            (*SUCCESS[:4], State.ROLLING_BACK, State.STOPPING, State.RESTARTING, State.ROLLED_BACK),
        )
        restore = journal.begin(
            Kind.RESTORE, trigger="cli", from_version="2", to_version="1", now=NOW
        )
        restore = finish(
            journal,
            restore,
            (State.ROLLING_BACK, State.STOPPING, State.RESTARTING, State.ROLLED_BACK),
        )

    assert [outcome_message(t).failure for t in (upgrade, failed, restore)] == [False, True, False]


async def test_the_daemon_notifies_a_cli_transaction_it_notices(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_text("SPECIVO_VERSION=0.1.10\n")
    settings = Settings(
        registry={"image": "127.0.0.1:5000/specivo/specivo"},
        deployment={"project_dir": project},
        state={"dir": tmp_path / "state"},
        backup={"dir": tmp_path / "backups"},
        notifications={"urls_file": urls_file(tmp_path, URL)},
    )
    send = FakeSend()
    made = Daemon(
        settings,
        tmp_path / "c.toml",
        clock=FakeClock(NOW),
        notifications=Notifications(lambda: settings.notifications, send),
    )
    with Journal(settings.state.dir) as cli:
        started = cli.begin(
            Kind.UPGRADE, trigger="cli", from_version="0.1.10", to_version="0.1.11", now=NOW
        )
        made.decide(NOW)
        finish(cli, started, (State.ABORTED,))
    made.decide(NOW)
    made.decide(NOW)
    await made.notifications.drain()

    assert [message.title for _, message in send.sent] == ["specivod: upgrade #1 ABORTED"]
    assert b'specivod_notifications_total{result="sent"} 1.0' in made.renderer.render()


@pytest.fixture
def receiver() -> Iterator[JsonReceiver]:
    with json_receiver() as made:
        yield made


async def test_apprise_posts_to_a_real_json_receiver(receiver: JsonReceiver) -> None:
    message = backup_failed_message("pg_dump exited 1")

    assert await apprise_send(message, f"json://127.0.0.1:{receiver.port}/", 10)
    assert not await apprise_send(message, f"json://127.0.0.1:{free_port()}/", 10)

    assert [(got["title"], got["type"]) for got in receiver.received] == [
        ("specivod: scheduled backup FAILED", "failure")
    ]
    assert "pg_dump exited 1" in receiver.received[0]["message"]
