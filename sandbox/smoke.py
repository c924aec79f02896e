"""The example configuration's smoke scenario, run against a sandbox deployment: the fake api
serves Specivo's API under ``/cgi-bin`` (``files/cgi-bin/api``), so the scenario's paths stay as
the example writes them and only ``base_url`` and the password file change."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from sandbox.deployment import SandboxDeployment
from sandbox.releases import SMOKE_PASSWORD

EXAMPLE = Path(__file__).parent.parent / "config" / "specivod.example.toml"
_FIRST_LINE = "# base_url = "


def example_scenario(example: Path = EXAMPLE) -> dict[str, Any]:
    """``base_url``, ``secrets`` and ``smoke`` of the example's commented scenario: the block of
    ``# `` lines from its ``base_url`` to the next blank line, uncommented."""
    lines = example.read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(_FIRST_LINE))
    block = []
    for line in lines[start:]:
        if not line.strip():
            break
        block.append(line.removeprefix("#").removeprefix(" "))
    parsed = tomllib.loads("\n".join(block))
    return {**{k: v for k, v in parsed.items() if k != "health"}, **parsed["health"]}


def smoke_health(deployment: SandboxDeployment, secrets_dir: Path) -> dict[str, Any]:
    """``health`` settings that run the example's scenario on ``deployment``: its password file
    written (0600) in ``secrets_dir``, its base URL the fake api's."""
    password_file = secrets_dir / "smoke-password"
    password_file.write_text(SMOKE_PASSWORD + "\n")
    password_file.chmod(0o600)
    scenario = example_scenario()
    return {
        **scenario,
        "base_url": f"http://127.0.0.1:{deployment.api_port}/cgi-bin",
        "secrets": {"password": str(password_file)},
    }
