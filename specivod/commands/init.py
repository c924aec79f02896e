"""``specivod init PROJECT_DIR``: write a first configuration for a compose project.

Rules: an existing file is never overwritten (checked first, and again by the write itself, which
links a finished temp file into place and fails if the name exists). What is written has been
loaded back through the same loader as every other command before it is put in place, so
``config check`` accepts it. A registry that cannot be read is a note in the file, not a failure:
the project is what init describes, and access to the registry is often configured afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from specivod.adapters import envfile
from specivod.adapters.registry import registry_from_settings
from specivod.commands import exit_codes
from specivod.commands.output import error, say
from specivod.config_loader import load_settings
from specivod.domain.errors import ConfigError, SpecivodError
from specivod.settings import RegistrySettings
from specivod.setup.discovery import Findings, ProjectDocuments, SetupError, discover
from specivod.setup.project import ComposeProject, read_project
from specivod.setup.render import Layout, TagReport, render

ReadProject = Callable[[ComposeProject], Awaitable[ProjectDocuments]]
TagsFor = Callable[[str], Awaitable[Sequence[str]]]


@dataclass(frozen=True)
class InitOptions:
    project_dir: Path
    output: Path | None
    """The file to create; ``None`` prints the configuration instead."""
    files: Sequence[str] = ()
    project_name: str | None = None
    env_file: Path = Path(".env")
    version_variable: str | None = None


async def registry_tags(image: str) -> Sequence[str]:
    """The repository's tags, with the credentials any command would use (docker config)."""
    settings = RegistrySettings(image=image, attempts=2, timeout=timedelta(seconds=10))
    async with registry_from_settings(settings) as registry:
        return await registry.list_tags()


async def _tag_report(tags_for: TagsFor, image: str) -> TagReport:
    try:
        return TagReport(list(await tags_for(image)))
    except (SpecivodError, ValidationError, OSError) as problem:
        return TagReport(None, " ".join(str(problem).split()))


def _pin_notes(findings: Findings, env_path: Path) -> list[str]:
    notes = []
    for variable in filter(None, (findings.version_variable, findings.data_dir_variable)):
        try:
            value = envfile.read_variable(env_path, variable)
        except (OSError, SpecivodError) as problem:
            notes.append(f"cannot read {variable} from {env_path}: {problem}")
            continue
        if value is None:
            notes.append(
                f"{env_path} does not set {variable}: specivod reads and pins it there, "
                f"add {variable}=... before the first upgrade"
            )
    return notes


def _loads(text: str, directory: Path) -> None:
    """``SetupError`` unless ``text`` loads as a configuration from ``directory``."""
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".toml", delete=False) as stream:
        stream.write(text)
    try:
        load_settings(Path(stream.name))
    except ConfigError as problem:
        raise SetupError(f"the configuration init made does not load (a bug):\n{problem}") from None
    finally:
        Path(stream.name).unlink()


def _create(target: Path, text: str) -> None:
    """Write ``target`` only if it does not exist: temp file, fsync, then link into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        Path(temporary).chmod(0o640)
        os.link(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            Path(temporary).unlink()


def _refusal(target: Path) -> str:
    return (
        f"{target} exists; init never overwrites a configuration (move it away, or name "
        "another file with --config, or print with --stdout)"
    )


async def init(
    options: InitOptions,
    *,
    read: ReadProject = read_project,
    tags_for: TagsFor = registry_tags,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    target = options.output
    if target is not None and (target.exists() or target.is_symlink()):
        error(_refusal(target))
        return exit_codes.FAILED
    directory = options.project_dir.expanduser().resolve()
    project = ComposeProject(directory, options.files, options.project_name, options.env_file)
    findings = discover(await read(project), options.version_variable)
    findings = dataclasses.replace(
        findings, notes=[*findings.notes, *_pin_notes(findings, project.env_path)]
    )
    report = await _tag_report(tags_for, findings.image)
    layout = Layout(directory, options.files, options.project_name, options.env_file)
    text = render(findings, layout, report, now().strftime("%Y-%m-%d %H:%M UTC"))
    if target is None:
        _loads(text, Path(tempfile.gettempdir()))
        say(text.rstrip())
        return exit_codes.OK
    target.parent.mkdir(parents=True, exist_ok=True)
    _loads(text, target.parent)
    try:
        _create(target, text)
    except FileExistsError:
        error(_refusal(target))
        return exit_codes.FAILED
    _summary(target, findings, report)
    return exit_codes.OK


def _summary(target: Path, findings: Findings, report: TagReport) -> None:
    tags = f"{len(report.tags)} tags" if report.tags is not None else "registry not read"
    say(f"wrote {target}")
    say(
        f"  {', '.join(findings.versioned_services)} on {findings.image}:"
        f"${{{findings.version_variable}}} (now {findings.deployed}, {tags}); "
        f"health: {findings.health_service}; database: {findings.database_service or '?'}; "
        f"data dir: {findings.data_dir_variable or '?'}"
    )
    for note in findings.notes:
        say(f"  check: {note}")
    say(f"next: specivod --config {target} config check && specivod --config {target} check")
