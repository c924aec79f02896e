"""Tests written to fail when one line of a safety rule is broken (each was checked against the
deliberate one-line bug it names): the health gate's fixed rate, the prerelease guard on ranges,
the restore script's failure flag, every assignment of the version in ``.env``, and the legal
journal transitions."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from specivod.adapters.backup.postgres import PostgresDatabase
from specivod.adapters.envfile import read_variable, rewrite_variable
from specivod.domain.references import parse_reference
from specivod.domain.states import TRANSITIONS, IllegalTransition, State, check_transition
from specivod.domain.versions import Step, VersionPolicy, parse_tags, require_version
from specivod.engine.ports import ServiceState
from specivod.engine.verification import HealthGate
from specivod.retrying import at_fixed_interval
from specivod.settings import BackupSettings, HealthSettings
from tests.unit.fakes import FakeClock

# --- a) the health gate checks at a fixed rate within its budget -------------------------------


class Flaky(Exception):
    pass


async def test_fixed_interval_sleeps_only_what_is_left_of_each_interval() -> None:
    clock = FakeClock()
    started = clock.monotonic()
    took = [0.5, 3.0, 0.5, 0.5]
    starts: list[float] = []
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await clock.sleep(seconds)

    with pytest.raises(Flaky):
        async for attempt in at_fixed_interval(
            4, timedelta(seconds=2), Flaky, sleep, clock.monotonic
        ):
            with attempt:
                starts.append(clock.monotonic() - started)
                clock.current += timedelta(seconds=took[len(starts) - 1])
                raise Flaky

    assert starts == [0.0, 2.0, 5.0, 6.0], "slot k starts at k × interval, or at once when late"
    assert sleeps == [1.5, 0.0, 0.5]


async def test_fixed_interval_stops_at_the_first_success() -> None:
    clock = FakeClock()
    tries = 0
    async for attempt in at_fixed_interval(
        5, timedelta(seconds=2), Flaky, clock.sleep, clock.monotonic
    ):
        with attempt:
            tries += 1
            if tries < 2:
                raise Flaky
    assert (tries, clock.slept) == (2, 2.0)


async def test_fixed_interval_does_not_retry_other_errors() -> None:
    clock = FakeClock()
    tries = 0
    with pytest.raises(KeyError):
        async for attempt in at_fixed_interval(
            5, timedelta(seconds=2), Flaky, clock.sleep, clock.monotonic
        ):
            with attempt:
                tries += 1
                raise KeyError("not a failed check")
    assert tries == 1


IMAGE = "127.0.0.1:5000/specivo/specivo"
UNHEALTHY = ServiceState("api", "c1", "running", "unhealthy", f"{IMAGE}:0.2.0", "t1")


class SlowDeployment:
    """Every check of the (never healthy) api takes 0.5 s of the clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.asked = 0

    async def versioned_images(self, version: str) -> dict[str, str]:
        return {"api": f"{IMAGE}:{version}"}

    async def service_state(self, service: str) -> ServiceState:
        self.asked += 1
        self.clock.current += timedelta(seconds=0.5)
        return replace(UNHEALTHY, service=service)


class NoProbe:
    async def request(self, method: str, url: str, timeout: float) -> object:
        raise AssertionError("no URL is configured")


async def test_the_gate_spends_its_budget_at_a_fixed_rate_even_when_checks_are_slow() -> None:
    clock = FakeClock()
    started = clock.monotonic()
    deployment = SlowDeployment(clock)
    settings = HealthSettings.model_validate({"retries": 4, "interval": "2s"})
    gate = HealthGate(
        deployment,  # type: ignore[arg-type]
        NoProbe(),  # type: ignore[arg-type]
        settings,
        parse_reference(IMAGE),
        clock,
    )

    verdict = await gate.verify("0.2.0")

    assert not verdict.healthy
    assert (deployment.asked, verdict.attempts) == (4, 4)
    assert clock.monotonic() - started == 6.5, "3 intervals, then the last 0.5 s check"
    assert clock.slept == 4.5


# --- b) the prerelease guard on ranges ----------------------------------------------------------


def test_a_range_naming_a_prerelease_does_not_admit_prereleases_unless_enabled() -> None:
    tags = parse_tags(["0.2.0-rc.1", "0.2.0-rc.2", "0.1.11"])
    deployed = require_version("0.1.10")
    policy = VersionPolicy(">=0.2.0-rc.0 || ~0.1", step=Step.ANY)

    assert not policy.allows(require_version("0.2.0-rc.1"))
    assert [str(version) for version in policy.candidates(tags, deployed)] == ["0.1.11"]
    assert str(policy.target(tags, deployed)) == "0.1.11"


def test_enabled_prereleases_are_admitted_by_a_plain_range() -> None:
    policy = VersionPolicy("~0.1", prerelease=True)

    assert policy.allows(require_version("0.1.12-rc.1"))
    assert policy.allows(require_version("0.1.12"))
    assert not policy.allows(require_version("0.2.0-rc.1")), "still within the range only"


def test_a_disabled_prerelease_is_refused_whatever_the_range() -> None:
    for range_ in ("*", ">=0.1.0", "~0.1", "^0.1.0-0", "0.1.12-rc.1"):
        assert not VersionPolicy(range_).allows(require_version("0.1.12-rc.1")), range_


# --- c) the restore script fails when pg_restore fails -----------------------------------------

FAKE_PSQL = """#!/bin/sh
# Reads its whole input like psql and exits as psql does when input merely ends: 0.
cat > "$PSQL_INPUT"
exit "${PSQL_EXIT:-0}"
"""
FAKE_PG_RESTORE = """#!/bin/sh
# Turns the dump on stdin into SQL; "cut" dumps fail half way, as a truncated archive does.
cat > /dev/null
printf 'BEGIN;\\nCREATE TABLE t (id int);\\n'
[ "$PG_RESTORE_EXIT" = 0 ] && printf 'COMMIT;\\n'
exit "$PG_RESTORE_EXIT"
"""


def _run_restore_script(tmp_path: Path, *, pg_restore: int, psql: int) -> tuple[int, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, script in (("psql", FAKE_PSQL), ("pg_restore", FAKE_PG_RESTORE)):
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    database = PostgresDatabase(object(), BackupSettings())  # type: ignore[arg-type]
    command = database.atomic_restore_command("DROP TABLE IF EXISTS leftover")
    sent = tmp_path / "psql-input"
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PSQL_INPUT": str(sent),
        "PSQL_EXIT": str(psql),
        "PG_RESTORE_EXIT": str(pg_restore),
    }
    finished = subprocess.run(
        command, input=b"dump", env=environment, capture_output=True, check=False, timeout=30
    )
    return finished.returncode, sent.read_text()


def test_the_restore_script_fails_when_pg_restore_fails_though_psql_exits_0(
    tmp_path: Path,
) -> None:
    code, sent = _run_restore_script(tmp_path, pg_restore=1, psql=0)

    assert code != 0
    assert "COMMIT" not in sent
    assert "RAISE EXCEPTION" in sent, "psql is made to stop before it reads anything more"


def test_the_restore_script_succeeds_when_both_succeed(tmp_path: Path) -> None:
    code, sent = _run_restore_script(tmp_path, pg_restore=0, psql=0)

    assert code == 0
    assert sent.startswith("BEGIN;\nDROP TABLE IF EXISTS leftover;\n")
    assert sent.rstrip().endswith("COMMIT;")


def test_the_restore_script_fails_when_psql_fails(tmp_path: Path) -> None:
    code, _ = _run_restore_script(tmp_path, pg_restore=0, psql=3)
    assert code == 3


def test_the_restore_script_leaves_no_flag_file_behind(tmp_path: Path) -> None:
    before = set(Path("/tmp").glob("tmp.*"))
    _run_restore_script(tmp_path, pg_restore=1, psql=0)
    assert set(Path("/tmp").glob("tmp.*")) <= before


# --- d) every assignment of the version in .env --------------------------------------------------

TWICE = (
    "SPECIVO_VERSION=0.1.9\n"
    "# a later line wins, as in compose\n"
    "export SPECIVO_VERSION='0.1.10' # current\n"
    "OTHER=SPECIVO_VERSION=1\n"
)


def test_the_last_of_two_assignments_is_the_value_compose_uses(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(TWICE)

    assert read_variable(env, "SPECIVO_VERSION") == "0.1.10"


def test_a_rewrite_changes_every_assignment_and_nothing_else(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(TWICE)

    rewrite_variable(env, "SPECIVO_VERSION", "0.2.0")

    assert env.read_text() == (
        "SPECIVO_VERSION=0.2.0\n"
        "# a later line wins, as in compose\n"
        "export SPECIVO_VERSION='0.2.0' # current\n"
        "OTHER=SPECIVO_VERSION=1\n"
    )
    assert read_variable(env, "SPECIVO_VERSION") == "0.2.0"


# --- e) the journal's legal transitions ---------------------------------------------------------

LEGAL = {
    ("planned", "backing_up"),
    ("planned", "rolling_back"),
    ("planned", "aborted"),
    ("backing_up", "pulling"),
    ("backing_up", "aborted"),
    ("pulling", "pinned"),
    ("pulling", "aborted"),
    ("pinned", "starting"),
    ("pinned", "rolling_back"),
    ("pinned", "aborted"),
    ("starting", "verifying"),
    ("starting", "rolling_back"),
    ("verifying", "succeeded"),
    ("verifying", "rolling_back"),
    ("rolling_back", "stopping"),
    ("rolling_back", "aborted"),
    ("rolling_back", "rollback_failed"),
    ("stopping", "safety_backup"),
    ("stopping", "restarting"),
    ("stopping", "rollback_failed"),
    ("safety_backup", "restoring"),
    ("safety_backup", "aborted"),
    ("safety_backup", "rollback_failed"),
    ("restoring", "restarting"),
    ("restoring", "safety_backup"),
    ("restoring", "rollback_failed"),
    ("restarting", "rolled_back"),
    ("restarting", "rollback_failed"),
}
"""Every legal (from, to) pair, written out by hand: any other pair must be refused. A change to
the state machine changes this table too, on purpose."""


def _legal(current: State, proposed: State) -> bool:
    try:
        check_transition(current, proposed)
    except IllegalTransition:
        return False
    return True


def test_exactly_the_expected_transitions_are_legal() -> None:
    actual = {(a.value, b.value) for a in State for b in State if _legal(a, b)}

    assert actual - LEGAL == set(), "legal but not expected"
    assert LEGAL - actual == set(), "expected but refused"


def test_every_state_is_in_the_table_and_only_terminal_states_have_no_way_out() -> None:
    assert set(TRANSITIONS) == set(State)
    for state in State:
        assert state.is_terminal == (not TRANSITIONS[state]), state
