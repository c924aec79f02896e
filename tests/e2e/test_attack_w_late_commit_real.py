"""Attack review W on the real stack: a migration statement the failed release started keeps
running in PostgreSQL after its container was stopped, and commits after the rollback read the
schema. Fixed: after the stop, the rollback ends every other session of the database (the
statement rolls back) before it reads the schema.

The sequence (finding W3): an upgrade to a release that never gets healthy; while it is being
verified its migration runs as one statement in autocommit (a ``DO`` block here; in real apps an
``ALTER TABLE`` that rewrites a big table, ``CREATE INDEX CONCURRENTLY``, a data migration).
The rollback stops the app services: the container and its client die, but PostgreSQL notices a
vanished client only when it next talks to it, so the statement goes on. The schema read right
after the stop is unchanged, so the rollback restores nothing ("image rollback only"), and the
statement commits afterwards: the old version runs on the failed release's schema while the
journal says ROLLED_BACK, schema unchanged. The test decides when the statement finishes (a row
it inserts once specivod is done), so the outcome does not depend on timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.deployment import SandboxDeployment
from sandbox.releases import BASELINE, NEVER_HEALTHY
from tests.conftest import Specivod
from tests.support.waiting import wait_for

pytestmark = pytest.mark.stack

PSQL = "/usr/lib/postgresql/15/bin/psql"
GO = "w3-the-migration-may-finish"
MIGRATION = f"""DO $$ BEGIN
  WHILE NOT EXISTS (SELECT 1 FROM issues WHERE title = '{GO}') LOOP
    PERFORM pg_sleep(0.2);
  END LOOP;
  ALTER TABLE issues ADD COLUMN migrated_by_the_failed_release integer;
  INSERT INTO schema_migrations VALUES (2);
END $$"""


def _migration_sessions(deployment: SandboxDeployment) -> int:
    return int(
        deployment.psql(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE query LIKE 'DO $$ BEGIN%' AND pid <> pg_backend_pid()"
        )
    )


def _column_exists(deployment: SandboxDeployment) -> bool:
    return (
        deployment.psql(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE column_name = 'migrated_by_the_failed_release'"
        )
        == "1"
    )


def test_a_migration_statement_outliving_its_container_is_not_missed_by_the_rollback(
    deployment: SandboxDeployment, specivod: Specivod
) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
    upgrade = subprocess.Popen(
        [
            *(sys.executable, "-m", "specivod", "--config", str(specivod.config)),
            *("upgrade", "--now", "--to", NEVER_HEALTHY),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=Path(__file__).parent.parent,
    )
    try:
        wait_for(
            f"{NEVER_HEALTHY} started", lambda: deployment.running_version() == NEVER_HEALTHY, 120
        )
        # The failed release's migration, run by the release inside its own container.
        deployment.compose(
            "exec",
            "-d",
            "-T",
            "api",
            PSQL,
            "-h",
            "127.0.0.1",
            "-p",
            str(deployment.db_port),
            "-U",
            "specivo",
            "-d",
            "specivo",
            "-c",
            MIGRATION,
        )
        wait_for("the migration running", lambda: _migration_sessions(deployment) == 1, 30)
        stdout, stderr = upgrade.communicate(timeout=300)
    finally:
        if upgrade.poll() is None:
            upgrade.kill()
            upgrade.wait()
    history = json.loads(specivod("history", "--json").stdout)["transactions"]
    last = history[0]
    assert last["state"] == "rolled_back", stdout + stderr
    assert deployment.running_version() == BASELINE
    still_running = _migration_sessions(deployment)

    deployment.psql(f"INSERT INTO issues (title) VALUES ('{GO}')")  # the statement finishes
    wait_for("the migration finished", lambda: _migration_sessions(deployment) == 0, 60)

    print(f"migration still running after ROLLED_BACK: {still_running}; journal: {last}")
    assert still_running == 0, "the rollback ended with the migration statement still running"
    assert not _column_exists(deployment) or last["restored"], (
        f"{BASELINE} runs on a schema {NEVER_HEALTHY}'s migration changed after the rollback "
        f"decided 'schema unchanged' (restored={last['restored']})"
    )
