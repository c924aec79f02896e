"""docs/configuration.md is generated from the settings models: it must be exactly what
``scripts/config-reference`` writes now, and name every key with a description."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from specivod.settings import Settings
from specivod.setup import reference

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"


def test_the_reference_in_docs_is_what_the_models_generate() -> None:
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert current == reference.generate(), (
        f"{DOC.relative_to(ROOT)} differs from the settings models: run "
        f"`{reference.REGENERATE}` and commit the result"
    )


def test_every_key_has_a_description() -> None:
    assert reference.undescribed() == [], "describe these with Field(description=...)"
    assert reference.stale_fallbacks() == [], "drop these from _FALLBACK_DESCRIPTIONS"


def test_every_section_and_key_of_the_models_is_in_the_reference() -> None:
    text = reference.generate()
    for section in Settings.model_fields:
        assert re.search(rf"^## `\[\[?{section}\]?\]`", text, re.MULTILINE), section
    for path in ("registry.password_file", "window.timezone", "health.smoke.json"):
        *parents, key = path.split(".")
        heading = re.escape(".".join(parents))
        table = re.search(rf"^##+ `\[\[?{heading}\]?\]`.*?(?=^##|\Z)", text, re.M | re.S)
        assert table is not None, path
        assert f"| `{key}` |" in table.group(0), path


def test_a_row_shows_type_default_limits_and_description() -> None:
    text = reference.generate()
    assert (
        "| `attempts` | integer | `4` | Tries per request on 5xx/429/network. "
        "Limits: at least 1, at most 20. |" in text
    )
    assert '| `min_free_bytes` | size | `"1.0GiB"` |' in text
    assert '| `step` | `"patch"` \\| `"minor"` \\| `"major"` \\| `"any"` | `"minor"` |' in text
    assert "| `image` | string | required |" in text


def test_a_field_is_rendered_from_the_model_alone() -> None:
    class Extra(BaseModel):
        every: str = Field("24h", description="Take a backup this often.")

    assert reference._table(Extra, "backup")[2] == (
        '| `every` | string | `"24h"` | Take a backup this often. |'
    )


def test_check_fails_on_a_stale_document_and_names_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(reference.generate().replace("Journal and lock.", "Journal."))
    assert reference.main(["--check"], stale) == 1
    assert "run scripts/config-reference" in capsys.readouterr().err
    assert "Journal." in stale.read_text(), "--check must not write"
    assert reference.main([], stale) == 0
    assert reference.main(["--check"], stale) == 0


def test_the_script_checks_without_writing() -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "config-reference"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stderr
