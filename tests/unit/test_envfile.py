"""The deployment's .env: compose's reading rules, and a rewrite that keeps every other byte."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from specivod.adapters.envfile import (
    effective_variable,
    read_variable,
    rewrite_variable,
    write_atomically,
)
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


def test_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text('# pin\nSPECIVO_VERSION="0.1.10\n"\n')
    for attempt in (read_variable, lambda p, n: rewrite_variable(p, n, "0.2.0")):
        with pytest.raises(DeploymentError, match=rf"^{path}:2: cannot read SPECIVO_VERSION"):
            attempt(path, "SPECIVO_VERSION")

    path.write_text("# pin\n\nSPECIVO_VERSION=${RELEASE}\n")
    with pytest.raises(
        DeploymentError, match=rf"^{path}:3: SPECIVO_VERSION uses .* needs a literal version$"
    ):
        read_variable(path, "SPECIVO_VERSION")


def test_a_single_quoted_dollar_is_literal_as_in_compose(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("SPECIVO_VERSION='0.1.10$x'\n")
    assert read_variable(path, "SPECIVO_VERSION") == "0.1.10$x"


@pytest.mark.parametrize("version", ["0.2.0-rc.1", "1.0.0-RC.1", "v1.0.0+Build.7"])
def test_rewrite_accepts_any_letters_a_release_tag_has(env: Path, version: str) -> None:
    rewrite_variable(env, "SPECIVO_VERSION", version)
    assert read_variable(env, "SPECIVO_VERSION") == version


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("", "SPECIVO_VERSION=0.2.0\n"),
        ("A=1\n", "A=1\nSPECIVO_VERSION=0.2.0\n"),
        ("A=1\r\n", "A=1\r\nSPECIVO_VERSION=0.2.0\n"),
        ("A=1\r", "A=1\rSPECIVO_VERSION=0.2.0\n"),
        ("A=1", "A=1\nSPECIVO_VERSION=0.2.0\n"),
    ],
)
def test_an_appended_assignment_starts_on_a_line_of_its_own(
    tmp_path: Path, before: str, after: str
) -> None:
    path = tmp_path / ".env"
    path.write_bytes(before.encode())

    rewrite_variable(path, "SPECIVO_VERSION", "0.2.0")

    assert path.read_bytes() == after.encode()


def test_the_temporary_file_is_made_beside_the_env_file(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "elsewhere-that-does-not-exist"))

    rewrite_variable(env, "SPECIVO_VERSION", "0.2.0")

    assert read_variable(env, "SPECIVO_VERSION") == "0.2.0"
    assert sorted(p.name for p in env.parent.iterdir()) == [".env"]


def test_a_failed_write_leaves_the_file_and_no_temporary(env: Path) -> None:
    with pytest.raises(TypeError, match="bytes-like"):
        write_atomically(env, "not bytes")  # type: ignore[arg-type]

    assert env.read_bytes() == ORIGINAL
    assert sorted(p.name for p in env.parent.iterdir()) == [".env"]
