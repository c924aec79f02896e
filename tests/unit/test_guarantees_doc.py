"""docs/guarantees.md names the test that holds each promise: every file, test and benchmark it
names must exist, so a renamed or deleted test cannot leave a promise quoting nothing."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "guarantees.md"
REFERENCE = re.compile(r"`((?:[\w/]+/)?(?:test_\w+|\w+)\.py)?(?:::(test_\w+\*?))?`")


def resolve(name: str) -> Path:
    if "/" in name:
        return ROOT / name
    found = sorted(ROOT.glob(f"tests/*/{name}"))
    assert len(found) == 1, f"{name} names {len(found)} files"
    return found[0]


def defined_tests(path: Path) -> list[str]:
    return re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), flags=re.MULTILINE)


def references() -> list[tuple[Path, str | None]]:
    named: list[tuple[Path, str | None]] = []
    last: Path | None = None
    for file, test in REFERENCE.findall(DOC.read_text()):
        if file:
            last = resolve(file)
        if file or test:
            assert last is not None, f"::{test} follows no file"
            named.append((last, test or None))
    return named


def test_every_named_file_and_test_exists() -> None:
    named = references()
    assert len(named) > 40
    for path, test in named:
        assert path.is_file(), f"{path.relative_to(ROOT)} does not exist"
        if test is not None:
            matching = fnmatch.filter(defined_tests(path), test)
            assert matching, f"{path.relative_to(ROOT)} has no {test}"


def test_the_check_notices_a_missing_test() -> None:
    assert not fnmatch.filter(defined_tests(resolve("test_upgrade_real.py")), "test_nonexistent")
    assert fnmatch.filter(defined_tests(resolve("test_daemon_real.py")), "test_min_age_*")
