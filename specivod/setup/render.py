"""The configuration ``specivod init`` writes: TOML with a comment on each choice saying what
it was found from, so an operator can check it line by line.

Rules: only keys init has a reason to write are set; the rest stay commented examples. Values
are written by ``tomli_w`` (quoting is never done by hand). The policy never allows a major
upgrade the operator has not asked for: the range starts at the deployed version and stops
before the next major; ``step = "minor"`` makes it one minor version at a time.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from specivod.domain.versions import Step, Version, VersionPolicy, parse_tags, parse_version
from specivod.setup.discovery import Findings


@dataclass(frozen=True)
class TagReport:
    """What the registry said: its tags, or why they could not be read."""

    tags: Sequence[str] | None
    error: str | None = None


@dataclass(frozen=True)
class Layout:
    """How the operator pointed init at the project."""

    directory: Path
    files: Sequence[str] = ()
    project_name: str | None = None
    env_file: Path = Path(".env")


def _value(value: Any) -> str:
    return tomli_w.dumps({"x": value}).strip().removeprefix("x = ")


def _line(key: str, value: Any, comment: str = "") -> str:
    text = f"{key} = {_value(value)}"
    return f"{text}   # {comment}" if comment else text


def _wrapped(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(
        text, 96, initial_indent=first, subsequent_indent=rest, break_long_words=False
    )


def proposed_range(deployed: Version | None) -> str:
    if deployed is None:
        return "*"
    return f">={deployed.semver} <{deployed.major + 1}.0.0"


def _policy(findings: Findings, report: TagReport) -> tuple[list[str], list[str]]:
    """The [policy] lines and the [registry] comment lines about tags."""
    deployed = parse_version(findings.deployed)
    version_range = proposed_range(deployed)
    registry: list[str] = []
    policy = ["# Versions specivod may install (npm syntax), one minor version per upgrade."]
    if report.tags is None:
        said = f"The registry could not be read: {report.error}"
        registry += _wrapped(said, "# ", "#   ")
        registry.append("# Fix access (below), then `specivod check` lists the versions.")
    else:
        versions = parse_tags(report.tags)
        highest = f"; the highest version is {versions[-1]}" if versions else ""
        registry.append(f"# The registry lists {len(report.tags)} tag(s){highest}.")
        if deployed is not None:
            policy_now = VersionPolicy(range=version_range, step=Step.MINOR)
            target = policy_now.target(versions, deployed)
            policy.append(
                f"# With this policy the next upgrade installs {target}."
                if target is not None
                else f"# With this policy {deployed} is the newest allowed: nothing to install."
            )
    if deployed is None:
        policy.append(
            f"# The deployed tag {findings.deployed!r} is not a version: pin one in .env "
            "(never `latest` in production) and narrow this range."
        )
    policy += [
        _line("range", version_range),
        _line("step", "minor", "patch | minor | major | any"),
        _line("prerelease", False),
        '# min_age = "72h"   # install a release only once it has been known this long',
    ]
    return registry, policy


def render(findings: Findings, layout: Layout, report: TagReport, when: str) -> str:
    """The whole file."""
    services = ", ".join(findings.versioned_services)
    registry_notes, policy = _policy(findings, report)
    lines = [
        f"# specivod configuration for the compose project in {layout.directory},",
        f"# written by `specivod init` on {when} from `docker compose config` and the registry.",
        "# Check it with `specivod config check`, then `specivod check`. Keys not written here",
        "# keep their defaults; docs/configuration.md describes every key.",
    ]
    if findings.notes:
        lines += ["#", "# Check these:"]
        for note in findings.notes:
            lines += _wrapped(note, "#   - ", "#     ")
    lines += [
        "",
        "[registry]",
        f"# {services} run {findings.image}:${{{findings.version_variable}}} "
        f"(now {findings.deployed}).",
        _line("image", findings.image),
        *registry_notes,
        "# A private registry: a user and a file holding the password (or docker_config):",
        '# username = "specivod"',
        '# password_file = "/etc/specivod/registry.password"',
        _line("poll_interval", "6h", "how often the tags are listed"),
        "",
        "[policy]",
        *policy,
        "",
        "[deployment]",
        _line("project_dir", str(layout.directory)),
    ]
    if layout.files:
        lines.append(_line("compose_files", list(layout.files)))
    if layout.project_name:
        lines.append(_line("project_name", layout.project_name))
    lines += [
        _line("env_file", str(layout.env_file), "relative to project_dir"),
        _line("version_variable", findings.version_variable, f"the tag of {services}"),
    ]
    if findings.data_dir_variable is not None:
        where = f"now {findings.data_dir}" if findings.data_dir else "mounted by the app"
        lines.append(_line("data_dir_variable", findings.data_dir_variable, where))
    else:
        lines.append('# data_dir_variable = "APP_DATA_DIR"   # not found: see the notes above')
    lines += ["", *_health(findings), "", *_backup(findings), "", *_rest()]
    return "\n".join(lines) + "\n"


def _health(findings: Findings) -> list[str]:
    how = {
        "compose healthcheck": "its compose healthcheck",
        "image HEALTHCHECK": "its image's HEALTHCHECK",
    }.get(findings.health_source)
    said = (
        f"# Docker reports {findings.health_service} healthy from {how}; every versioned"
        if how
        else f"# {findings.health_service} has no healthcheck; every versioned"
    )
    return [
        "[health]",
        f"{said} service must be healthy after an upgrade.",
        _line("service", findings.health_service),
        _line("retries", 30, "retries x interval: the time a new version has to get healthy"),
        _line("interval", "5s"),
        '# url = "http://127.0.0.1:8080/healthz"   # must answer 2xx too',
        "# A smoke scenario ([[health.smoke]], see config/specivod.example.toml) checks more.",
    ]


def _backup(findings: Findings) -> list[str]:
    lines = [
        "[backup]",
        "# Before every upgrade: a dump of the database and a snapshot of the data dir.",
        _line("dir", "/var/backups/specivod"),
        _line("keep", 5),
    ]
    if findings.database_service is None:
        return [*lines, '# database_service = "db"   # not found: see the notes above']
    lines.append(_line("database_service", findings.database_service, "runs PostgreSQL"))
    if findings.database_user is not None and findings.database_name is not None:
        lines += [
            _line("database_user", findings.database_user, "its POSTGRES_USER"),
            _line("database_name", findings.database_name),
        ]
    else:
        lines += [
            _line("database_user", "specivo", "not found in its environment: check"),
            _line("database_name", "specivo", "not found in its environment: check"),
        ]
    return [*lines, _line("min_free_bytes", "1GiB", "kept free on the backup disk")]


def _rest() -> list[str]:
    return [
        "# Unattended upgrades happen only inside a window: without one, specivod never upgrades",
        "# on its own (`specivod upgrade` still does). For example, weekend nights:",
        "# [[window]]",
        '# days = ["sat", "sun"]',
        '# start = "02:00"',
        '# end = "05:00"',
        '# timezone = "UTC"',
        "",
        "[http]",
        _line("listen", "127.0.0.1:9717", "/metrics, /healthz, /api/v1/"),
        '# token_file = "/etc/specivod/webhook.token"   # enables the Alertmanager webhook',
        "",
        "[alertmanager]",
        "# Firing alerts matching all of these within watch_period after an upgrade roll it back:",
        "# matchers = ['alertname=\"SpecivoDown\"']",
        _line("watch_period", "2h"),
        "",
        "[state]",
        _line("dir", "/var/lib/specivod", "journal and lock"),
    ]
