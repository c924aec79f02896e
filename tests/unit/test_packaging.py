"""The shipped files: the systemd unit passes systemd-analyze, and keeps the contract."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

UNIT = Path(__file__).parent.parent.parent / "systemd" / "specivod.service"


def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian package systemd)"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/bin/specivod", "/bin/true"))

    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_unit_keeps_the_contract() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "RestartPreventExitStatus=78",
        "WatchdogSec=",
        "NoNewPrivileges=yes",
        "TimeoutStopSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert line in text


def _values(key: str) -> list[str]:
    return [
        value
        for line in UNIT.read_text().splitlines()
        if line.startswith(f"{key}=")
        for value in line.removeprefix(f"{key}=").split()
    ]


def test_docker_restart_does_not_stop_specivod() -> None:
    assert "docker.service" in _values("Wants")
    assert "docker.service" in _values("After")
    assert _values("Requires") == []
    assert _values("BindsTo") == []
    assert _values("PartOf") == []
