"""What ``specivod init`` finds in a compose project, from compose's own documents: the project
as written (``compose config --no-interpolate``) and as rendered (``compose config``).

Rules: pure, no I/O. The version variable is the one that is, exactly, the tag of one or more
services' images (``image: repo:${SPECIVO_VERSION}``, a default allowed); those services are the
versioned ones and must render one repository, which is ``registry.image``. The data dir variable
is one that is, exactly, the source of a versioned service's bind mount. The database is the
service that is not versioned and runs PostgreSQL. Anything found by a guess among several
candidates, or not found, becomes a note for the operator; only what makes a configuration
impossible (no versioned service, an ambiguous version variable, two repositories) is an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from specivod.domain.errors import SpecivodError

_VARIABLE = re.compile(
    r"\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:[:?+-][^}]*)?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)
_POSTGRES_IMAGES = ("postgres", "postgis", "pgvecto", "timescaledb")
_POSTGRES_ENVIRONMENT = ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "PGDATA")
_HEALTH_NAMES = ("api", "server", "web", "app", "backend")


class SetupError(SpecivodError):
    """The project cannot be described by a configuration as it is."""


@dataclass(frozen=True)
class ProjectDocuments:
    """What the project reader saw."""

    raw: Mapping[str, Any]
    """``compose config --no-interpolate --format json``."""
    rendered: Mapping[str, Any]
    """``compose config --format json``."""
    image_healthchecks: Mapping[str, bool | None] = field(default_factory=dict)
    """Rendered image → whether it declares a HEALTHCHECK (``None``: not on this host)."""


@dataclass(frozen=True)
class Findings:
    version_variable: str
    versioned_services: list[str]
    image: str
    """Repository without tag, as the versioned services render it."""
    deployed: str
    """The tag the versioned services render now."""
    health_service: str
    health_source: str
    """``compose healthcheck``, ``image HEALTHCHECK`` or ``none found``."""
    database_service: str | None
    database_user: str | None
    database_name: str | None
    data_dir_variable: str | None
    data_dir: str | None
    project_name: str | None
    notes: list[str]


def variable_name(text: str) -> str | None:
    """The variable ``text`` is exactly (``${NAME}``, ``${NAME:-default}``, ``$NAME``), if any."""
    match = _VARIABLE.fullmatch(text.strip())
    if match is None:
        return None
    return match.group("braced") or match.group("bare")


def split_image(image: str) -> tuple[str, str | None]:
    """``repo:tag@digest`` → ``(repo, tag)``; works on raw text with ``${...}`` in it."""
    masked = _VARIABLE.sub(lambda match: "v" * len(match.group(0)), image)
    end = masked.find("@")
    end = len(image) if end < 0 else end
    slash = masked.rfind("/", 0, end)
    colon = masked.find(":", slash + 1, end)
    if colon < 0:
        return image[:end], None
    return image[:colon], image[colon + 1 : end]


def _services(document: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    services = document.get("services")
    if not isinstance(services, Mapping) or not services:
        raise SetupError("compose config lists no services")
    return {str(name): spec for name, spec in services.items() if isinstance(spec, Mapping)}


def _version_variable(raw: dict[str, Mapping[str, Any]], wanted: str | None) -> str:
    by_variable: dict[str, list[str]] = {}
    for service, spec in raw.items():
        _, tag = split_image(str(spec.get("image", "")))
        name = variable_name(tag) if tag else None
        if name is not None:
            by_variable.setdefault(name, []).append(service)
    if wanted is not None:
        if wanted not in by_variable:
            raise SetupError(
                f"no service's image tag is ${{{wanted}}}: specivod pins the version by rewriting "
                "that variable, so an image must be written like repo:${" + wanted + "}"
            )
        return wanted
    if not by_variable:
        raise SetupError(
            "no service's image tag is a variable (like image: repo:${APP_VERSION}): specivod "
            "pins the version in .env, so the compose file must take it from there"
        )
    if len(by_variable) == 1:
        return next(iter(by_variable))
    named = [name for name in by_variable if "VERSION" in name.upper()]
    if len(named) == 1:
        return named[0]
    listed = ", ".join(f"{name} ({', '.join(by_variable[name])})" for name in sorted(by_variable))
    raise SetupError(f"several variables are image tags: {listed}; choose with --version-variable")


def _image_of(
    rendered: Mapping[str, Mapping[str, Any]], services: Sequence[str]
) -> tuple[str, str]:
    repositories = {}
    for service in services:
        repository, tag = split_image(str(rendered.get(service, {}).get("image", "")))
        repositories[service] = (repository, tag or "latest")
    distinct = set(repositories.values())
    if len(distinct) > 1:
        shown = ", ".join(
            f"{service}: {repo}:{tag}" for service, (repo, tag) in repositories.items()
        )
        raise SetupError(f"the versioned services render different images ({shown})")
    return distinct.pop()


def _has_health(
    raw: Mapping[str, Any], image: str, images: Mapping[str, bool | None]
) -> tuple[bool | None, str]:
    check = raw.get("healthcheck")
    if isinstance(check, Mapping):
        if check.get("disable") is True or check.get("test") in (["NONE"], "NONE"):
            return False, "none found"
        if check.get("test"):
            return True, "compose healthcheck"
    found = images.get(image)
    return found, "image HEALTHCHECK" if found else "none found"


def _health(
    documents: ProjectDocuments,
    raw: dict[str, Mapping[str, Any]],
    rendered: dict[str, Mapping[str, Any]],
    versioned: list[str],
    notes: list[str],
) -> tuple[str, str]:
    def preference(service: str) -> int:
        return _HEALTH_NAMES.index(service) if service in _HEALTH_NAMES else len(_HEALTH_NAMES)

    ordered = sorted(versioned, key=preference)
    checks = {
        service: _has_health(
            raw[service], str(rendered[service].get("image", "")), documents.image_healthchecks
        )
        for service in ordered
    }
    healthy = [service for service in ordered if checks[service][0]]
    chosen = healthy[0] if healthy else ordered[0]
    if not healthy:
        unknown = [service for service in ordered if checks[service][0] is None]
        why = " (its image is not on this host to look)" if chosen in unknown else ""
        notes.append(
            f"no healthcheck found for {chosen}{why}: specivod then only waits to see it keep "
            "running; add a healthcheck to the compose file or set health.url"
        )
    return chosen, checks[chosen][1]


def _database(
    raw: dict[str, Mapping[str, Any]],
    rendered: dict[str, Mapping[str, Any]],
    versioned: list[str],
    notes: list[str],
) -> tuple[str | None, str | None, str | None]:
    others = [service for service in rendered if service not in versioned]

    def environment(service: str) -> Mapping[str, Any]:
        value = rendered[service].get("environment")
        return value if isinstance(value, Mapping) else {}

    by_image = [
        service
        for service in others
        if any(
            name in split_image(str(rendered[service].get("image", "")))[0].lower()
            for name in _POSTGRES_IMAGES
        )
    ]
    by_environment = [
        service for service in others if set(environment(service)) & set(_POSTGRES_ENVIRONMENT)
    ]
    found = by_image or by_environment
    if not found:
        notes.append(
            "no PostgreSQL service found: backups dump the database of backup.database_service"
        )
        return None, None, None
    needed = [
        service
        for service in found
        if any(service in (raw[app].get("depends_on") or {}) for app in versioned)
    ]
    chosen = (needed or found)[0]
    if len(found) > 1:
        notes.append(f"several PostgreSQL services ({', '.join(found)}); chose {chosen}")
    variables = environment(chosen)
    user = variables.get("POSTGRES_USER")
    name = variables.get("POSTGRES_DB") or user
    if user is None:
        notes.append(
            f"POSTGRES_USER is not in {chosen}'s environment: check backup.database_user and "
            "backup.database_name"
        )
    return chosen, None if user is None else str(user), None if name is None else str(name)


def _data_dir(
    raw: dict[str, Mapping[str, Any]],
    rendered: dict[str, Mapping[str, Any]],
    versioned: list[str],
    version_variable: str,
    notes: list[str],
) -> tuple[str | None, str | None]:
    found: dict[str, str | None] = {}
    for service in versioned:
        rendered_volumes = {
            str(volume.get("target")): volume.get("source")
            for volume in rendered[service].get("volumes") or []
            if isinstance(volume, Mapping)
        }
        for volume in raw[service].get("volumes") or []:
            if not isinstance(volume, Mapping):
                continue
            name = variable_name(str(volume.get("source", "")))
            if name is not None and name != version_variable and name not in found:
                source = rendered_volumes.get(str(volume.get("target")))
                found[name] = None if source is None else str(source)
    if not found:
        notes.append(
            "no volume of the app is mounted from a variable (like ${APP_DATA_DIR}:/data): "
            "specivod backs up the directory deployment.data_dir_variable names in .env"
        )
        return None, None
    named = [name for name in found if "DATA" in name.upper()]
    chosen = (named or list(found))[0]
    if len(found) > 1:
        notes.append(f"several mounts come from variables ({', '.join(found)}); chose {chosen}")
    return chosen, found[chosen]


def discover(documents: ProjectDocuments, version_variable: str | None = None) -> Findings:
    """What the configuration should say about this project, or ``SetupError``."""
    raw = _services(documents.raw)
    rendered = _services(documents.rendered)
    variable = _version_variable(raw, version_variable)
    versioned = [
        service
        for service, spec in raw.items()
        if variable_name(split_image(str(spec.get("image", "")))[1] or "") == variable
        and service in rendered
    ]
    image, deployed = _image_of(rendered, versioned)
    notes: list[str] = []
    health_service, health_source = _health(documents, raw, rendered, versioned, notes)
    database, user, name = _database(raw, rendered, versioned, notes)
    data_variable, data_dir = _data_dir(raw, rendered, versioned, variable, notes)
    project_name = documents.rendered.get("name")
    return Findings(
        version_variable=variable,
        versioned_services=versioned,
        image=image,
        deployed=deployed,
        health_service=health_service,
        health_source=health_source,
        database_service=database,
        database_user=user,
        database_name=name,
        data_dir_variable=data_variable,
        data_dir=data_dir,
        project_name=str(project_name) if project_name else None,
        notes=notes,
    )
