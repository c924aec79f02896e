"""A specivod configuration for a sandbox deployment."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from sandbox.deployment import SandboxDeployment

HEALTH_RETRIES = 12
HEALTH_INTERVAL_SECONDS = 1


def specivod_config(
    deployment: SandboxDeployment, state_root: Path, **sections: dict[str, object] | list[object]
) -> dict[str, object]:
    """Settings for ``deployment``, quick health timings, state and backups under
    ``state_root``; ``sections`` override keys per section (a list, like ``window``, replaces)."""
    config: dict[str, dict[str, object]] = {
        "registry": {"image": deployment.images.app, "timeout": "10s"},
        "policy": {"range": ">=0.1.0 <1.0.0", "step": "minor"},
        "deployment": {"project_dir": str(deployment.directory)},
        "health": {
            "service": "api",
            "url": f"http://127.0.0.1:{deployment.api_port}/healthz",
            "retries": HEALTH_RETRIES,
            "interval": f"{HEALTH_INTERVAL_SECONDS}s",
            "timeout": "2s",
            "smoke": [
                {
                    "name": "issue list",
                    "url": f"http://127.0.0.1:{deployment.api_port}/cgi-bin/issues",
                    "contains": '"issues"',
                }
            ],
        },
        "backup": {"dir": str(state_root / "backups"), "keep": 3, "min_free_bytes": "10MB"},
        "state": {"dir": str(state_root / "state")},
    }
    merged: dict[str, object] = dict(config)
    for name, values in sections.items():
        if isinstance(values, dict):
            merged[name] = {**config.get(name, {}), **values}
        else:
            merged[name] = values
    return merged


def write_config(path: Path, config: dict[str, object]) -> Path:
    path.write_text(tomli_w.dumps(config))
    return path
