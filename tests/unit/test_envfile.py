"""The deployment's .env: compose's reading rules, and a rewrite that keeps every other byte."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from specivod.adapters.envfile import effective_variable, read_variable, rewrite_variable
from specivod.domain.errors import DeploymentError

ORIGINAL = (
    b"# Specivo\r\n"
    b'export SPECIVO_VERSION="0.1.10"  # pinned by hand\r\n'
    b"\n"
    b"SPECIVO_DATA_DIR=/srv/specivo/data\n"
    b"QUOTED='a b # not a comment'\n"
    b"LATIN=caf\xe9\n"
    b"LAST=1"
)


@pytest.fixture
def env(tmp_path: Path) -> Path:
    path = tmp_path / ".env"
    path.write_bytes(ORIGINAL)
    path.chmod(0o640)
    return path


def test_reads_values_the_way_compose_does(env: Path) -> None:
    assert read_variable(env, "SPECIVO_VERSION") == "0.1.10"
    assert read_variable(env, "QUOTED") == "a b # not a comment"
    assert read_variable(env, "LAST") == "1"
    assert read_variable(env, "ABSENT") is None


def test_shell_environment_beats_the_file(env: Path) -> None:
    assert effective_variable(env, "SPECIVO_VERSION", {"SPECIVO_VERSION": "0.2.0"}) == "0.2.0"
    assert effective_variable(env, "SPECIVO_VERSION", {}) == "0.1.10"


def test_rewrite_changes_only_the_value(env: Path) -> None:
    rewrite_variable(env, "SPECIVO_VERSION", "0.2.0")

    assert env.read_bytes() == ORIGINAL.replace(b'"0.1.10"', b'"0.2.0"')
    assert stat.S_IMODE(env.stat().st_mode) == 0o640
    assert [p.name for p in env.parent.iterdir()] == [".env"]


def test_rewrite_appends_an_absent_variable(env: Path) -> None:
    rewrite_variable(env, "NEW_VERSION", "1.2.3")

    assert env.read_bytes() == ORIGINAL + b"\nNEW_VERSION=1.2.3\n"


def test_rewrite_is_atomic_rename(env: Path) -> None:
    inode = env.stat().st_ino
    rewrite_variable(env, "SPECIVO_VERSION", "0.2.0")
    assert env.stat().st_ino != inode


def test_interpolated_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("SPECIVO_VERSION=${RELEASE}\n")
    with pytest.raises(DeploymentError, match="interpolation"):
        read_variable(path, "SPECIVO_VERSION")


def test_multiline_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text('SPECIVO_VERSION="0.1.10\n"\n')
    with pytest.raises(DeploymentError, match="single-line"):
        read_variable(path, "SPECIVO_VERSION")


def test_rewrite_refuses_values_that_are_not_versions(env: Path) -> None:
    with pytest.raises(DeploymentError, match="not a plain version"):
        rewrite_variable(env, "SPECIVO_VERSION", "0.2.0\nEVIL=1")
    assert env.read_bytes() == ORIGINAL


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match="does not exist"):
        read_variable(tmp_path / ".env", "SPECIVO_VERSION")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_rewrite_keeps_the_owner(env: Path) -> None:
    os.chown(env, 1234, 5678)
    rewrite_variable(env, "SPECIVO_VERSION", "0.2.0")
    assert (env.stat().st_uid, env.stat().st_gid) == (1234, 5678)


def test_rewrite_through_a_symlink_updates_the_target_and_keeps_the_link(
    env: Path, tmp_path: Path
) -> None:
    link = tmp_path / "deployment" / ".env"
    link.parent.mkdir()
    link.symlink_to(env)

    rewrite_variable(link, "SPECIVO_VERSION", "0.2.0")

    assert link.is_symlink()
    assert env.read_bytes() == ORIGINAL.replace(b'"0.1.10"', b'"0.2.0"')
