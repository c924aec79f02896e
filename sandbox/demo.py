"""``scripts/demo``: specivod on the sandbox, step by step, with real components."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sandbox.config import specivod_config, write_config
from sandbox.demo_daemon import MATCHER, RANGE, TARGET, DaemonDemo
from sandbox.deployment import SandboxDeployment, create_deployment
from sandbox.dockerd import start_engine
from sandbox.images import build_and_push
from sandbox.releases import (
    BASELINE,
    HEALTHY_UPGRADE,
    MIGRATES_THEN_FAILS,
    SEARCH_BROKEN,
    UNPULLABLE,
)
from sandbox.smoke import smoke_health
from tests.support.registry import start_registry


def _title(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def _specivod(config: Path, *arguments: str) -> int:
    command = [sys.executable, "-m", "specivod", "--config", str(config), *arguments]
    print(f"$ specivod {' '.join(arguments)}", flush=True)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}
    code = subprocess.run(command, env=environment, check=False).returncode
    print(f"(exit code {code})", flush=True)
    return code


def _show(deployment: SandboxDeployment) -> None:
    issues = deployment.psql("SELECT count(*) FROM issues")
    print(
        f"running {deployment.running_version() or 'nothing'}; schema "
        f"{deployment.schema_version()}; {issues} issues; FORMAT file says "
        f"{(deployment.data_dir / 'FORMAT').read_text().strip()!r}",
        flush=True,
    )


def _show_status(demo: DaemonDemo) -> None:
    status = demo.status()
    last = status["transaction"] or {}
    print(
        f"GET /api/v1/status: deployed {status['deployed']}; window_open "
        f"{status['window_open']}; in_progress {status['in_progress']}; target "
        f"{status['daemon']['target']}; last transaction: {last.get('kind')} "
        f"({last.get('trigger')}) to {last.get('to')}, {last.get('state')}",
        flush=True,
    )


def _daemon_story(deployment: SandboxDeployment, root: Path) -> None:
    """The daemon on the same journal and backups as the CLI steps above."""
    before = deployment.running_version() or BASELINE
    demo = DaemonDemo(deployment, root / "daemon", root)
    try:
        _title(
            f"the daemon (specivod run), maintenance window open now, range {RANGE!r}: "
            f"an unattended upgrade to {TARGET}"
        )
        print(f"$ specivod run   (config {demo.config}; status on {demo.base})", flush=True)
        demo.start_daemon()
        demo.wait_until_settled("upgrade", TARGET, "succeeded", 180)
        _show_status(demo)
        _specivod(demo.config, "status")
        _show(deployment)

        _title(f"a real Alertmanager delivers a firing alert matching {MATCHER}")
        demo.start_alertmanager()
        print(f"Alertmanager on {demo.alertmanager_url}; firing SpecivoDown", flush=True)
        demo.fire("SpecivoDown")
        demo.wait_until_settled("rollback", before, "rolled_back", 180)
        demo.wait_for_polls(3, 30)  # the plan after the rollback: the version is skipped
        _show_status(demo)
        print(f"daemon plan: {demo.status()['daemon']['plan']}", flush=True)
        _specivod(demo.config, "history")
        _show(deployment)
    finally:
        demo.stop()


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="specivod-demo-"))
    _title("starting the sandbox: Docker Engine, registry, images")
    engine = start_engine(root / "dockerd.log")
    registry = start_registry(root / "registry")
    deployment: SandboxDeployment | None = None
    try:
        images = build_and_push(engine.client, registry.address)
        deployment = create_deployment(root, images, BASELINE)
        health = smoke_health(deployment, root)
        config = write_config(
            root / "specivod.toml", specivod_config(deployment, root, health=health)
        )
        print(f"deployment in {deployment.directory}; config {config}")
        _show(deployment)

        _title("what would specivod install?")
        _specivod(config, "check")

        _title(
            f"a healthy release that migrates the schema: {HEALTHY_UPGRADE} "
            "(smoke: sign in, open an issue, search for it, delete it)"
        )
        _specivod(config, "upgrade", "--now", "--to", HEALTHY_UPGRADE)
        _show(deployment)

        _title(f"a release that gets healthy but whose search finds nothing: {SEARCH_BROKEN}")
        _specivod(config, "upgrade", "--now", "--to", SEARCH_BROKEN, "--force")
        _show(deployment)

        _title(f"a release whose image cannot be pulled: {UNPULLABLE}")
        _specivod(config, "upgrade", "--now", "--to", UNPULLABLE, "--force")
        _show(deployment)

        _title(
            f"a release that migrates, rewrites the data dir, then never gets healthy: "
            f"{MIGRATES_THEN_FAILS}"
        )
        _specivod(config, "upgrade", "--now", "--to", MIGRATES_THEN_FAILS)
        _show(deployment)

        _title("undo the last successful upgrade by hand")
        _specivod(config, "rollback")
        _show(deployment)

        _title("what happened")
        _specivod(config, "history")
        _specivod(config, "backups")

        _daemon_story(deployment, root)
        return 0
    finally:
        _title("stopping the sandbox")
        if deployment is not None:
            deployment.down()
        registry.stop()
        engine.stop()
        print(f"files kept in {root}")


if __name__ == "__main__":
    sys.exit(main())
