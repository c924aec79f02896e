"""PostgreSQL in the database service, reached only through ``docker compose exec -T``: dump,
validate, restore, size, and the schema fingerprint.

A dump goes from the container to the file directly (the file is the stdout of the compose
process), and a restore reads the file as its stdin; no dump byte passes through this process.
Connections go to the server's socket in its default directory first and to 127.0.0.1 second
(libpq tries each host in turn), so both the official image and a TCP-only server work; the port
comes from ``PGPORT`` in the container when it is set there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shlex
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import BinaryIO

from specivod.adapters.backup import leftovers
from specivod.adapters.backup.files import create_private_file
from specivod.adapters.backup.leftovers import relations_in
from specivod.adapters.backup.progress import Position, read_position, reporting, written_size
from specivod.adapters.backup.runner import ComposeRunner
from specivod.adapters.backup.store import dump_does_not_fit, ran_out_of_space
from specivod.adapters.process import Completed
from specivod.domain.errors import BackupError, DeploymentError
from specivod.redaction import redact_argv
from specivod.settings import BackupSettings

log = logging.getLogger(__name__)

HOSTS = "/var/run/postgresql,127.0.0.1"
_NOISE_PREFIXES = ("--", "\\restrict", "\\unrestrict")
"""Lines of ``pg_dump --schema-only`` that change from run to run without a schema change:
comments (server and dump versions) and psql's random per-dump ``\\restrict`` key."""

_NESTED_BEGIN = "there is already a transaction in progress"
"""psql's warning at pg_restore's own ``BEGIN`` inside the restore's transaction; expected."""

_ATOMIC_RESTORE = r"""
drop_sql=$1
shift
failed=$(mktemp) || exit 1
rm -f "$failed"
{
    printf 'BEGIN;\n%s;\n' "$drop_sql"
    if ! pg_restore --clean --if-exists --single-transaction -f -; then
        : > "$failed"
        printf '\\.\n%s\n' "DO \$\$ BEGIN RAISE EXCEPTION 'pg_restore failed'; END \$\$;"
    fi
} | psql -X -q -o /dev/null -v ON_ERROR_STOP=1 "$@"
status=$?
if [ -e "$failed" ]; then
    rm -f "$failed"
    exit 1
fi
exit $status
"""
r"""Run by ``sh`` in the database container (PostgreSQL 12 or later: ``-f -`` is stdout).
``pg_restore --single-transaction`` wraps its SQL, large objects included, in one transaction
that the outer ``BEGIN`` extends to the drop; its ``COMMIT`` comes last, only when it read the
whole dump. When it fails there is no ``COMMIT``, so the server rolls everything back when psql
disconnects; ``\.`` and the ``RAISE`` make psql stop early, and the script exits 1 whatever psql
said (psql exits 0 when its input merely ends)."""

_RESTORE = (
    r"""
check_sql=$1
drop_sql=$2
shift 2
leftovers=$(psql -X -qAt -v ON_ERROR_STOP=1 -c "$check_sql" "$@") || exit 1
if [ "$leftovers" = 0 ]; then
    exec pg_restore --clean --if-exists --single-transaction "$@"
fi
set -- "$drop_sql" "$@"
"""
    + _ATOMIC_RESTORE
)
"""``_ATOMIC_RESTORE`` when the database has relations the dump lacks. When it has none, there is
nothing to drop, and ``pg_restore --single-transaction`` alone is as atomic and spares the
restore a pass of every row through ``psql`` (about a seventh of the client CPU)."""


_END_SESSIONS = """
WITH sessions AS MATERIALIZED (
    SELECT pid, coalesce(nullif(application_name, ''), 'unnamed') AS name,
           coalesce(state, 'unknown') AS state
    FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
)
SELECT format('%s %s (%s)', pid, name, state) FROM sessions WHERE pg_terminate_backend(pid)
"""
_STILL_THERE = "SELECT count(*) FROM pg_stat_activity WHERE pid IN ({pids})"
_SESSION_END_POLLS = 60


def _schema_line_matters(line: bytes) -> bool:
    text = line.strip()
    return bool(text) and not text.decode(errors="replace").startswith(_NOISE_PREFIXES)


class PostgresDatabase:
    def __init__(self, runner: ComposeRunner, settings: BackupSettings) -> None:
        self._runner = runner
        self._settings = settings

    @property
    def _connection(self) -> list[str]:
        return ["-h", HOSTS, "-U", self._settings.database_user]

    @property
    def dump_format(self) -> str:
        return "custom" if self._settings.dump_command is None else "configured"

    def dump_command(self) -> list[str]:
        if self._settings.dump_command is not None:
            return list(self._settings.dump_command)
        return ["pg_dump", "-Fc", *self._connection, "-d", self._settings.database_name]

    async def _exec(
        self,
        command: Sequence[str],
        *,
        stdin: BinaryIO | None = None,
        stdout: BinaryIO | None = None,
    ) -> Completed:
        service = self._settings.database_service
        try:
            result = await self._runner.compose(
                "exec", "-T", service, *command, stdin=stdin, stdout=stdout
            )
        except DeploymentError as error:
            raise BackupError(str(error)) from None
        if not result.ok and _not_running(service).search(result.stderr):
            raise BackupError(
                f'the database service "{service}" is not running, so nothing can be dumped, '
                f"read or restored: start it (`docker compose start {service}`) and try again"
            )
        return result

    async def dump(self, target: Path, written: Position | None = None) -> None:
        """Dump into the new file ``target`` (0600), fsynced; ``BackupError`` when the command
        fails or writes nothing."""
        with create_private_file(target) as stream:
            async with reporting(stream, written, written_size):
                result = await self._exec(self.dump_command(), stdout=stream)
            if not result.ok:
                raise await self._dump_failed(target, stream, result)
            stream.flush()
            os.fsync(stream.fileno())
            if os.fstat(stream.fileno()).st_size == 0:
                raise BackupError(
                    f"database dump is empty: `{shlex.join(redact_argv(self.dump_command()))}`"
                )

    async def _dump_failed(self, target: Path, stream: BinaryIO, result: Completed) -> BackupError:
        statistics = os.fstatvfs(stream.fileno())
        free = statistics.f_bavail * statistics.f_frsize
        if not ran_out_of_space(result.stderr, free):
            return BackupError(f"database dump failed: {result.describe()}")
        database_size = None
        with contextlib.suppress(BackupError):
            database_size = await self.size()
        backups = self._settings.dir
        directory = backups if target.is_relative_to(backups) else target.parent
        minimum = int(self._settings.min_free_bytes)
        return dump_does_not_fit(directory, written_size(stream), free, database_size, minimum)

    async def validate(self, dump: Path) -> list[str]:
        """The dump's table of contents (``pg_restore --list``); ``BackupError`` when it is
        not a valid archive."""
        with dump.open("rb") as stream:
            result = await self._exec(["pg_restore", "--list"], stdin=stream)
        entries = [line for line in result.stdout.splitlines() if line and line[0] != ";"]
        if not result.ok or not entries:
            reason = result.describe() if not result.ok else "empty table of contents"
            raise BackupError(f"database dump {dump} is not a valid archive: {reason}")
        return entries

    async def relations(self, dump: Path) -> set[tuple[str, str]]:
        """``(schema, name)`` of every relation the dump holds; ``BackupError`` when it is not
        a valid archive."""
        return relations_in(await self.validate(dump))

    async def restore(
        self,
        dump: Path,
        read: Position | None = None,
        relations: Collection[tuple[str, str]] | None = None,
    ) -> None:
        """Replace the database's contents with the dump, after dropping the relations the dump
        lacks (see ``leftovers``): ``relations``, read from the dump when not given. By default
        both are one transaction: a restore that fails changes nothing. A configured
        ``restore_command`` runs after the drop has committed."""
        if relations is None:
            relations = await self.relations(dump)
        drop = leftovers.drop_missing_sql(set(relations))
        configured = self._settings.restore_command
        if configured is None:
            command = self.restore_command(leftovers.count_missing_sql(set(relations)), drop)
            shown: str | None = "pg_restore --clean --if-exists --single-transaction"
            failed = "database restore failed and was rolled back, the database is unchanged"
        else:
            result = await self._exec(self._psql(drop))
            if not result.ok:
                raise BackupError(
                    f"cannot drop the relations the backup does not have: {result.describe()}"
                )
            command, shown, failed = list(configured), None, "database restore failed"
        with dump.open("rb") as stream:
            async with reporting(stream, read, read_position):
                result = await self._exec(command, stdin=stream)
        if not result.ok:
            raise BackupError(f"{failed}: {result.describe(shown)}")
        for notice in result.stderr.splitlines():
            if _NESTED_BEGIN not in notice:
                log.info("%s", notice)

    def restore_command(self, check_sql: str, drop_sql: str) -> list[str]:
        """The dump (on stdin) restored in one transaction: by ``pg_restore`` alone when
        ``check_sql`` counts no relation to drop, else as ``atomic_restore_command``."""
        return [
            "sh",
            "-c",
            _RESTORE,
            "specivod-restore",
            check_sql,
            drop_sql,
            *self._connection,
            "-d",
            self._settings.database_name,
        ]

    def atomic_restore_command(self, drop_sql: str) -> list[str]:
        """``drop_sql`` and the dump (on stdin, turned into SQL by ``pg_restore``) in one
        transaction through ``psql``; it is committed only when ``pg_restore`` read the whole
        dump, and rolled back on the first error."""
        return [
            "sh",
            "-c",
            _ATOMIC_RESTORE,
            "specivod-restore",
            drop_sql,
            *self._connection,
            "-d",
            self._settings.database_name,
        ]

    async def size(self) -> int:
        """``pg_database_size`` of the database."""
        query = "SELECT pg_database_size(current_database())"
        output = await self._query(query)
        try:
            return int(output.strip())
        except ValueError:
            raise BackupError(f"unexpected answer to {query!r}: {output[:200]!r}") from None

    async def fingerprint(self) -> str:
        """``sha256:<hex>`` of the configured query's output, or of the schema-only dump without
        its comments and blank lines."""
        if self._settings.fingerprint_query is not None:
            output = await self._query(self._settings.fingerprint_query)
            return "sha256:" + hashlib.sha256(output.strip().encode()).hexdigest()
        command = [
            "pg_dump",
            "--schema-only",
            *self._connection,
            "-d",
            self._settings.database_name,
        ]
        digest = hashlib.sha256()
        with tempfile.TemporaryFile() as schema:
            result = await self._exec(command, stdout=schema)
            if not result.ok:
                raise BackupError(f"cannot read the database schema: {result.describe()}")
            schema.seek(0)
            for line in schema:
                if _schema_line_matters(line):
                    digest.update(line.rstrip() + b"\n")
        return "sha256:" + digest.hexdigest()

    async def end_other_sessions(self) -> list[str]:
        """``pg_terminate_backend`` of every other client session of the database (a terminated
        statement rolls back), then wait until they are gone: PostgreSQL notices a client that
        vanished with its container only when it next talks to it, so a migration statement the
        stopped app started could otherwise still commit after the schema was read."""
        ended = (await self._query(_END_SESSIONS)).split("\n")
        sessions = [line for line in ended if line.strip()]
        pids = ",".join(line.split(" ", 1)[0] for line in sessions)
        for _ in range(_SESSION_END_POLLS):
            if not pids or (await self._query(_STILL_THERE.format(pids=pids))).strip() == "0":
                return sessions
            await asyncio.sleep(0.5)
        raise BackupError(f"database sessions still there after being ended: {pids}")

    def _psql(self, sql: str) -> list[str]:
        return [
            "psql",
            "-X",
            "-qAt",
            "-v",
            "ON_ERROR_STOP=1",
            *self._connection,
            "-d",
            self._settings.database_name,
            "-c",
            sql,
        ]

    async def _query(self, sql: str) -> str:
        result = await self._exec(self._psql(sql))
        if not result.ok:
            raise BackupError(f"database query failed: {result.describe()}")
        return result.stdout


def _not_running(service: str) -> re.Pattern[str]:
    """Compose's answer to ``exec`` into a service without a running container."""
    name = re.escape(service)
    return re.compile(
        rf'service "?{name}"? is not running|no container found for service "?{name}"?'
    )
