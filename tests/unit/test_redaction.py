"""Secrets in configured commands and URLs never reach an error, a log line or ``config show``."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import pytest

from specivod import redaction
from specivod.adapters.backup.postgres import PostgresDatabase
from specivod.adapters.process import CommandTimeout, Completed, run
from specivod.cli import main
from specivod.config_loader import load_settings
from specivod.domain.errors import BackupError
from specivod.redaction import MASK, redact, redact_argv, secrets_in
from specivod.settings import BackupSettings

CONFIG = """
[registry]
image = "127.0.0.1:5000/specivo/specivo"

[deployment]
project_dir = "."

[health]
url = "https://probe:urlpass-77@127.0.0.1:8080/health"
smoke = [{{ name = "home", url = "http://smoke:smokepass-77@127.0.0.1/" }}]

[backup]
dump_command = {dump}
restore_command = ["sh", "-c", "PGPASSWORD='shellpass 77' pg_restore", "--token", "tokpass-77"]
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pg_dump postgresql://u:s3cret@h/db", "pg_dump postgresql://u:********@h/db"),
        ("https://user:p@ss@host:8080/x?y=1", "https://user:********@host:8080/x?y=1"),
        ("PGPASSWORD=hunter22 pg_dump", "PGPASSWORD=******** pg_dump"),
        (
            "API_TOKEN=abc AWS_SECRET_ACCESS_KEY=xyz",
            "API_TOKEN=******** AWS_SECRET_ACCESS_KEY=********",
        ),
        ("host=h password='a b c' dbname=x", "host=h password=******** dbname=x"),
        ("--db-password=x1 --user u", "--db-password=******** --user u"),
        ("tool --password hunter22 --user u", "tool --password ******** --user u"),
        ("mysqldump -phunter22 db", "mysqldump -p******** db"),
    ],
)
def test_secrets_are_masked_in_text(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        'psql: error: FATAL:  password authentication failed for user "specivo"',
        "password_file=/etc/specivod/registry.password",
        "https://host:8080/path@v2",
        "docker compose -p specivo exec -T db pg_dump",
        "no token was offered",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_argv_items_are_masked_whole() -> None:
    argv = ["pg_dump", "--password", "two words", "PGPASSWORD=a b", "postgresql://u:pw@h/db"]

    assert redact_argv(argv) == [
        "pg_dump",
        "--password",
        MASK,
        f"PGPASSWORD={MASK}",
        f"postgresql://u:{MASK}@h/db",
    ]


def test_secrets_found_in_a_command_are_the_masked_values() -> None:
    argv = ["sh", "-c", "PGPASSWORD='x y' pg_dump", "--token", "t0k", "-p5432", "mysql://a:b@h"]

    assert sorted(secrets_in(argv)) == sorted(["x y", "t0k", "b"])


def test_a_registered_secret_is_masked_anywhere_but_short_ones_are_not_registered() -> None:
    redaction.register("plain-secret-41\n", "abc")

    assert redact("server said plain-secret-41 twice") == f"server said {MASK} twice"
    assert redact("abc") == "abc"


def _config(tmp_path: Path, dump: Sequence[str]) -> Path:
    path = tmp_path / "specivod.toml"
    path.write_text(CONFIG.format(dump=json.dumps(list(dump))))
    return path


def test_config_show_masks_passwords_in_commands_and_urls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, ["pg_dump", "-d", "postgresql://u:dumppass-77@h/db"])

    for form in (["--json"], []):
        assert main(["--config", str(config), "config", "show", *form]) == 0
        shown = capsys.readouterr().out
        assert "pg_dump" in shown and "127.0.0.1:8080/health" in shown
        for secret in ("dumppass-77", "urlpass-77", "smokepass-77", "shellpass", "tokpass-77"):
            assert secret not in shown, secret


def test_settings_register_the_secrets_of_commands_and_urls(tmp_path: Path) -> None:
    load_settings(_config(tmp_path, ["pg_dump", "postgresql://u:echoed-pass-78@h/db"]))

    text = "pg_dump: echoed-pass-78 urlpass-77 smokepass-77 shellpass 77 tokpass-77"
    assert redact(text) == f"pg_dump: {MASK} {MASK} {MASK} {MASK} {MASK}"


class ShellCompose:
    """A compose stand-in that really runs a process: it prints its arguments to stderr, as a
    failing tool that echoes its command line would, and exits 1."""

    async def compose(
        self,
        *arguments: str,
        version: str | None = None,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        script = 'echo "cannot run: $*" >&2; exit 1'
        return await run(
            ["sh", "-c", script, "compose", *arguments], timeout=10, stdin=stdin, stdout=stdout
        )

    def data_dir(self) -> Path | None:
        return None


async def test_a_failing_dump_command_shows_its_program_and_no_password(tmp_path: Path) -> None:
    settings = BackupSettings(dump_command=["pg_dump", "-Fc", "postgresql://u:s3cret@h/db"])
    database = PostgresDatabase(ShellCompose(), settings)

    with pytest.raises(BackupError) as raised:
        await database.dump(tmp_path / "dump")

    message = str(raised.value)
    assert "s3cret" not in message
    assert "pg_dump -Fc postgresql://u:********@h/db" in message


async def test_a_late_command_is_named_without_its_password() -> None:
    with pytest.raises(CommandTimeout) as raised:
        await run(["sh", "-c", "sleep 5", "PGPASSWORD=late-secret"], timeout=0.2)

    assert "late-secret" not in str(raised.value)
    assert "sh -c 'sleep 5' 'PGPASSWORD=********'" in str(raised.value)


def test_the_log_filter_masks_the_final_message_and_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test_redaction")
    caplog.handler.addFilter(redaction.RedactingFilter())
    try:
        raise RuntimeError("connect to postgresql://u:boom-secret@h failed")
    except RuntimeError:
        logger.exception("running %s", "PGPASSWORD=arg-secret pg_dump")

    assert "arg-secret" not in caplog.text and "boom-secret" not in caplog.text
    assert "running PGPASSWORD=******** pg_dump" in caplog.text
