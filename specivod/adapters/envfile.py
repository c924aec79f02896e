"""The deployment's ``.env``: read one variable the way compose does, and rewrite one variable's
value atomically while keeping every other byte of the file.

Supported per line, as compose reads them: ``NAME=value``, ``export NAME=value``, single- and
double-quoted values, and `` # comment`` after an unquoted or quoted value. A version written with
``$`` interpolation or over several lines is refused rather than guessed at.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from specivod.domain.errors import DeploymentError

_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


def _assignment(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"""^(?P<head>[ \t]*(?:export[ \t]+)?{re.escape(name)}[ \t]*=[ \t]*)
             (?P<value>'[^'\n]*'|"(?:[^"\\\n]|\\.)*"|[^\s#'"][^\r\n]*?|)
             (?P<tail>(?:[ \t]+\#[^\r\n]*|[ \t]*)?)
             (?P<eol>\r?\n|\r|)$""",
        re.VERBOSE,
    )


@dataclass(frozen=True)
class Assignment:
    line: int
    raw_value: str

    @property
    def value(self) -> str:
        raw = self.raw_value
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            inner = raw[1:-1]
            return inner if raw[0] == "'" else re.sub(r"\\(.)", r"\1", inner)
        return raw


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode(_ENCODING, _ERRORS)
    except FileNotFoundError:
        raise DeploymentError(f"{path}: the deployment's env file does not exist") from None
    except OSError as error:
        raise DeploymentError(f"{path}: cannot read: {error.strerror}") from None
    return text.splitlines(keepends=True)


def _assignments(lines: list[str], name: str, path: Path) -> list[Assignment]:
    pattern = _assignment(name)
    loose = re.compile(rf"^[ \t]*(?:export[ \t]+)?{re.escape(name)}[ \t]*=")
    found = []
    for number, line in enumerate(lines):
        match = pattern.match(line)
        if match:
            found.append(Assignment(line=number, raw_value=match.group("value")))
        elif loose.match(line):
            raise DeploymentError(
                f"{path}:{number + 1}: cannot read {name}: use a single-line value such as "
                f"{name}=0.1.11"
            )
    return found


def read_variable(path: Path, name: str) -> str | None:
    """The value ``name`` has in the file (the last assignment wins), or ``None``."""
    found = _assignments(_lines(path), name, path)
    if not found:
        return None
    value = found[-1].value
    if "$" in value and not found[-1].raw_value.startswith("'"):
        raise DeploymentError(
            f"{path}:{found[-1].line + 1}: {name} uses interpolation ({value!r}); specivod "
            "needs a literal version"
        )
    return value


def effective_variable(path: Path, name: str, environ: Mapping[str, str]) -> str | None:
    """What compose would use: the shell environment overrides the env file."""
    if name in environ:
        return environ[name]
    return read_variable(path, name)


def _render(assignment_line: str, name: str, value: str) -> str:
    match = _assignment(name).match(assignment_line)
    if match is None:  # checked by _assignments
        raise AssertionError(assignment_line)
    old = match.group("value")
    quote = old[0] if old[:1] in ("'", '"') else ""
    return f"{match.group('head')}{quote}{value}{quote}{match.group('tail')}{match.group('eol')}"


def rewrite_variable(path: Path, name: str, value: str) -> None:
    """Set ``name`` to ``value`` in every line that assigns it (appending one line when none
    does), atomically: temp file in the same directory, fsync, rename, mode and owner kept."""
    if not re.fullmatch(r"[A-Za-z0-9._+-]+", value):
        raise DeploymentError(f"refusing to write {name}={value!r}: not a plain version string")
    path = path.resolve()  # a symlinked .env: replace the file it points to, keep the link
    lines = _lines(path)
    found = _assignments(lines, name, path)
    for assignment in found:
        lines[assignment.line] = _render(lines[assignment.line], name, value)
    if not found:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += "\n"
        lines.append(f"{name}={value}\n")
    write_atomically(path, "".join(lines).encode(_ENCODING, _ERRORS))


def write_atomically(path: Path, content: bytes) -> None:
    """Replace ``path`` with ``content`` so a reader sees the old or the new file, never a mix."""
    status = path.stat()
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fchmod(stream.fileno(), status.st_mode & 0o7777)
            with contextlib.suppress(PermissionError):
                os.fchown(stream.fileno(), status.st_uid, status.st_gid)
            os.fsync(stream.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
