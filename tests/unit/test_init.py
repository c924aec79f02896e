"""``specivod init`` on compose documents written by hand (what ``compose config`` prints), a fake
registry and a real temp directory: what it finds, what it writes, and that it never overwrites."""

from __future__ import annotations

import asyncio
import copy
import re
import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from specivod.cli import main
from specivod.commands.init import InitOptions, _create, init
from specivod.config_loader import load_settings
from specivod.domain.errors import RegistryError
from specivod.setup.discovery import ProjectDocuments, SetupError, discover, split_image
from specivod.setup.project import ComposeProject

REGISTRY = "127.0.0.1:5000"
DB_IMAGE = f"{REGISTRY}/specivo/postgres:15@sha256:{'a' * 64}"
TAGS = ["0.1.9", "0.1.10", "0.1.11", "0.2.0", "0.2.3", "1.0.0", "latest", "release"]


def _raw() -> dict[str, Any]:
    """A project shaped like real ones (sandbox/shapes.py): api and worker on one versioned image
    with a default, the db by digest, a sidecar whose registry is a variable."""
    app = "${SPECIVO_REGISTRY}/specivo-shapes/specivo:${SPECIVO_VERSION:-release}"
    return {
        "name": "shop",
        "services": {
            "db": {
                "image": DB_IMAGE,
                "healthcheck": {"test": ["CMD", "pg_isready"]},
                "volumes": [{"type": "volume", "source": "dbdata", "target": "/var/lib/pg"}],
            },
            "api": {
                "image": app,
                "healthcheck": {"disable": False},
                "depends_on": {"db": {"condition": "service_healthy"}},
                "volumes": [{"type": "volume", "source": "${SPECIVO_DATA_DIR}", "target": "/data"}],
            },
            "worker": {
                "image": app,
                "volumes": [
                    {"type": "volume", "source": "${SPECIVO_DATA_DIR}", "target": "/data"},
                    {"type": "volume", "source": "${SPECIVO_CACHE}", "target": "/cache"},
                ],
            },
            "sidecar": {"image": "${SPECIVO_REGISTRY}/specivo-shapes/sidecar:latest"},
        },
    }


def _rendered(version: str = "0.1.10", data: str = "/srv/shop/data") -> dict[str, Any]:
    app = f"{REGISTRY}/specivo-shapes/specivo:{version}"
    mount = {"type": "bind", "source": data, "target": "/data"}
    return {
        "name": "shop",
        "services": {
            "db": {"image": DB_IMAGE, "environment": {"PGPORT": "5432", "SPECIVO_X": "1"}},
            "api": {"image": app, "volumes": [mount]},
            "worker": {
                "image": app,
                "volumes": [mount, {"type": "bind", "source": "/tmp/c", "target": "/cache"}],
            },
            "sidecar": {"image": f"{REGISTRY}/specivo-shapes/sidecar:latest"},
        },
    }


def _documents(
    raw: dict[str, Any] | None = None, rendered: dict[str, Any] | None = None
) -> ProjectDocuments:
    rendered = rendered or _rendered()
    app = rendered["services"]["api"]["image"]
    return ProjectDocuments(raw or _raw(), rendered, {app: True, DB_IMAGE: False})


class FakeProject:
    def __init__(self, documents: ProjectDocuments) -> None:
        self.documents = documents
        self.asked: list[ComposeProject] = []

    async def __call__(self, project: ComposeProject) -> ProjectDocuments:
        self.asked.append(project)
        return self.documents


class FakeRegistry:
    def __init__(self, tags: Sequence[str] | None = TAGS) -> None:
        self.tags = tags
        self.asked: list[str] = []

    async def __call__(self, image: str) -> Sequence[str]:
        self.asked.append(image)
        if self.tags is None:
            raise RegistryError(f"registry {image}: cannot connect")
        return self.tags


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "shop"
    directory.mkdir()
    (directory / ".env").write_text("SPECIVO_VERSION=0.1.10\nSPECIVO_DATA_DIR=/srv/shop/data\n")
    return directory


def _init(
    options: InitOptions,
    documents: ProjectDocuments | None = None,
    tags: FakeRegistry | None = None,
) -> tuple[int, FakeProject, FakeRegistry]:
    reader, registry = FakeProject(documents or _documents()), tags or FakeRegistry()
    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    code = asyncio.run(init(options, read=reader, tags_for=registry, now=lambda: now))
    return code, reader, registry


def test_finds_the_versioned_services_their_image_the_database_data_dir_and_health() -> None:
    found = discover(_documents())
    assert found.version_variable == "SPECIVO_VERSION"
    assert found.versioned_services == ["api", "worker"]
    assert found.image == f"{REGISTRY}/specivo-shapes/specivo"
    assert found.deployed == "0.1.10"
    assert (found.health_service, found.health_source) == ("api", "image HEALTHCHECK")
    assert found.database_service == "db"
    assert (found.data_dir_variable, found.data_dir) == ("SPECIVO_DATA_DIR", "/srv/shop/data")
    assert "several mounts come from variables (SPECIVO_DATA_DIR, SPECIVO_CACHE)" in found.notes[-1]


def test_writes_a_commented_config_that_loads_and_says_what_it_found(
    project: Path, tmp_path: Path
) -> None:
    target = tmp_path / "etc" / "specivod.toml"
    code, reader, registry = _init(InitOptions(project, target))
    assert code == 0
    assert reader.asked[0].directory == project
    assert registry.asked == [f"{REGISTRY}/specivo-shapes/specivo"]
    settings = load_settings(target)
    assert settings.registry.image == f"{REGISTRY}/specivo-shapes/specivo"
    assert settings.deployment.project_dir == project
    assert settings.deployment.version_variable == "SPECIVO_VERSION"
    assert settings.deployment.data_dir_variable == "SPECIVO_DATA_DIR"
    assert settings.health.service == "api"
    assert settings.backup.database_service == "db"
    assert settings.policy.range == ">=0.1.10 <1.0.0"
    assert settings.window == []
    text = target.read_text()
    assert "# The registry lists 8 tag(s); the highest version is 1.0.0." in text
    assert "# With this policy the next upgrade installs 0.2.3." in text
    assert "# Docker reports api healthy from its image's HEALTHCHECK" in text
    assert "# [[window]]" in text
    assert target.stat().st_mode & 0o777 == 0o640
    assert [path.name for path in target.parent.iterdir()] == ["specivod.toml"]


def test_refuses_to_overwrite_and_reads_nothing(project: Path, tmp_path: Path) -> None:
    target = tmp_path / "specivod.toml"
    target.write_text("# mine\n")
    code, reader, registry = _init(InitOptions(project, target))
    assert code == 1
    assert target.read_text() == "# mine\n"
    assert reader.asked == [] and registry.asked == []


def test_a_file_that_appears_while_init_works_is_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "specivod.toml"
    target.write_text("# someone else's\n")
    with pytest.raises(FileExistsError):
        _create(target, "[registry]\n")
    assert target.read_text() == "# someone else's\n"
    assert [path.name for path in tmp_path.iterdir()] == ["specivod.toml"]


def test_a_dangling_symlink_is_not_written_through(project: Path, tmp_path: Path) -> None:
    target = tmp_path / "specivod.toml"
    target.symlink_to(tmp_path / "elsewhere.toml")
    code, _, _ = _init(InitOptions(project, target))
    assert code == 1
    assert not (tmp_path / "elsewhere.toml").exists()


def test_prints_with_stdout_and_writes_nothing(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = _init(InitOptions(project, None))
    assert code == 0
    printed = capsys.readouterr().out
    assert tomllib.loads(printed)["registry"]["image"] == f"{REGISTRY}/specivo-shapes/specivo"
    assert not list(tmp_path.glob("**/*.toml"))


def test_an_unreadable_registry_is_a_note_not_a_failure(project: Path, tmp_path: Path) -> None:
    target = tmp_path / "specivod.toml"
    code, _, _ = _init(InitOptions(project, target), tags=FakeRegistry(None))
    assert code == 0
    text = target.read_text()
    assert "# The registry could not be read: registry" in text
    assert "cannot connect" in text
    load_settings(target)


def test_a_version_missing_from_the_env_file_is_a_note(project: Path, tmp_path: Path) -> None:
    (project / ".env").write_text("SPECIVO_DATA_DIR=/srv/shop/data\n")
    target = tmp_path / "specivod.toml"
    rendered = _rendered(version="release")
    code, _, _ = _init(InitOptions(project, target), _documents(rendered=rendered))
    assert code == 0
    text = target.read_text()
    assert "does not set SPECIVO_VERSION" in re.sub(r"\s*\n#\s+", " ", text)
    assert "The deployed tag 'release' is not a version" in text
    assert tomllib.loads(text)["policy"]["range"] == "*"


def test_no_variable_in_an_image_tag_is_an_error() -> None:
    raw = _raw()
    for service in ("api", "worker"):
        raw["services"][service]["image"] = "specivo/specivo:0.1.10"
    with pytest.raises(SetupError, match="no service's image tag is a variable"):
        discover(_documents(raw=raw))


def test_two_tag_variables_need_a_choice_and_the_choice_must_be_a_tag() -> None:
    raw = _raw()
    raw["services"]["sidecar"]["image"] = "example/sidecar:${SIDECAR_TAG}"
    raw["services"]["api"]["image"] = "example/app:${APP_TAG}"
    raw["services"]["worker"]["image"] = "example/app:${APP_TAG}"
    rendered = _rendered()
    rendered["services"]["api"]["image"] = rendered["services"]["worker"]["image"] = "a/b:1.2.3"
    with pytest.raises(SetupError, match="several variables are image tags"):
        discover(_documents(raw, rendered))
    found = discover(_documents(raw, rendered), "APP_TAG")
    assert found.versioned_services == ["api", "worker"]
    with pytest.raises(SetupError, match=r"no service's image tag is \$\{REGISTRY\}"):
        discover(_documents(raw, rendered), "REGISTRY")


def test_a_version_named_variable_wins_over_another_tag_variable() -> None:
    raw = _raw()
    raw["services"]["sidecar"]["image"] = "example/sidecar:${SIDECAR_TAG}"
    assert discover(_documents(raw)).version_variable == "SPECIVO_VERSION"


def test_versioned_services_on_two_repositories_are_an_error() -> None:
    rendered = _rendered()
    rendered["services"]["worker"]["image"] = f"{REGISTRY}/specivo-shapes/worker:0.1.10"
    with pytest.raises(SetupError, match="render different images"):
        discover(_documents(rendered=rendered))


def test_the_database_from_postgres_variables_names_user_and_database() -> None:
    rendered = _rendered()
    rendered["services"]["db"]["image"] = "example/db-server:15"
    rendered["services"]["db"]["environment"] = {"POSTGRES_USER": "shop", "POSTGRES_DB": "orders"}
    found = discover(_documents(rendered=rendered))
    assert (found.database_service, found.database_user, found.database_name) == (
        "db",
        "shop",
        "orders",
    )
    del rendered["services"]["db"]["environment"]["POSTGRES_DB"]
    assert discover(_documents(rendered=rendered)).database_name == "shop"


def test_without_a_database_or_data_dir_variable_the_config_still_loads(
    project: Path, tmp_path: Path
) -> None:
    raw, rendered = _raw(), _rendered()
    del raw["services"]["db"], rendered["services"]["db"]
    for service in ("api", "worker"):
        raw["services"][service]["volumes"] = [{"type": "bind", "source": "./d", "target": "/d"}]
    target = tmp_path / "specivod.toml"
    code, _, _ = _init(InitOptions(project, target), _documents(raw, rendered))
    assert code == 0
    text = target.read_text()
    assert '# database_service = "db"   # not found' in text
    assert '# data_dir_variable = "APP_DATA_DIR"' in text
    assert "no PostgreSQL service found" in text
    load_settings(target)


def test_health_prefers_a_service_with_a_healthcheck() -> None:
    raw = copy.deepcopy(_raw())
    raw["services"]["api"]["healthcheck"] = {"disable": True}
    raw["services"]["worker"]["healthcheck"] = {"test": ["CMD", "true"]}
    found = discover(_documents(raw))
    assert (found.health_service, found.health_source) == ("worker", "compose healthcheck")
    raw["services"]["worker"]["healthcheck"] = {"test": ["NONE"]}
    found = discover(_documents(raw))
    assert (found.health_service, found.health_source) == ("api", "none found")
    assert any("no healthcheck found for api" in note for note in found.notes)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("${REG}/a/b:${V:-x}", ("${REG}/a/b", "${V:-x}")),
        ("host:5000/a/b:1.2@sha256:abc", ("host:5000/a/b", "1.2")),
        ("host:5000/a/b", ("host:5000/a/b", None)),
        ("b@sha256:abc", ("b", None)),
        ("${HOST:-h:5000}/b:$TAG", ("${HOST:-h:5000}/b", "$TAG")),
    ],
)
def test_split_image(image: str, expected: tuple[str, str | None]) -> None:
    assert split_image(image) == expected


def test_the_cli_runs_init_without_loading_a_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing (even broken) file is refused as a target, not loaded: exit 1, never 78."""
    target = tmp_path / "specivod.toml"
    target.write_text("not [ toml")
    assert main(["--config", str(target), "init", str(tmp_path)]) == 1
    assert "never overwrites" in capsys.readouterr().err
    assert target.read_text() == "not [ toml"
