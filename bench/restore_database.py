"""The database restore step through specivod against a plain
``docker compose exec -T db pg_restore --single-transaction --clean --if-exists -d ... < dump``,
on the real sandbox stack, at two database sizes (the larger above 1 GiB).

Only the database step is measured: no safety dump, no data dir, no restart. The database is
filled server-side (``generate_series``) like in ``bench.backup_dump``, dumped once per size
with ``pg_dump -Fc``, and that one dump is restored by both sides, with the app service stopped
as it is during a real restore. Rounds alternate which side goes first, and each run starts
after a ``CHECKPOINT`` and a ``sync``, so neither pays for writing out the other's restore. The
specivod side is the call ``Backups.restore`` makes for the database
(``PostgresDatabase.restore`` with the dump's relations as the manifest records them: the count
of relations the dump lacks, and the dump replayed in one transaction) in a fresh worker process
that reports its own peak RSS; the plain side is timed around the compose process.

Writes bench/results/restore_database.json. Run: ``.venv/bin/python -m bench.restore_database``
(``BENCH_ROUNDS``, ``BENCH_SIZES_MB`` such as ``256,1200`` override the defaults).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.backup_dump import MIB, _build_images, _version, _vm_hwm
from sandbox.deployment import SandboxDeployment, create_deployment
from sandbox.dockerd import start_engine
from sandbox.images import ImageNames
from tests.support.registry import start_registry

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SIZES_MB = [int(size) for size in os.environ.get("BENCH_SIZES_MB", "257,1229").split(",")]
RESULTS = Path(__file__).parent / "results" / "restore_database.json"
CONNECTION = ["-h", "127.0.0.1", "-U", "specivo", "-d", "specivo"]
ROW_BYTES = 175
"""About what one row of md5 text costs in the table, to aim the fill at the size asked for."""
INSERT_ROWS = (
    "INSERT INTO bench_rows SELECT n, md5(random()::text) || md5(random()::text) "
    "|| md5(random()::text) || md5(random()::text) FROM generate_series(1, {rows}) n"
)


def worker(project_dir: str, dump: str) -> None:
    """One database restore as ``Backups.restore`` runs it; prints seconds and peak RSS."""
    from specivod.adapters.backup.postgres import PostgresDatabase
    from specivod.adapters.compose import ComposeDeployment
    from specivod.settings import BackupSettings, DeploymentSettings

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    deployment = ComposeDeployment(DeploymentSettings(project_dir=Path(project_dir)))
    settings = BackupSettings.model_validate({"dir": tempfile.gettempdir()})
    database = PostgresDatabase(deployment, settings)
    # What the manifest holds, recorded when the backup validated its dump.
    relations = asyncio.run(database.relations(Path(dump)))
    positions: list[int] = []
    started = time.monotonic()
    asyncio.run(database.restore(Path(dump), positions.append, relations))
    seconds = time.monotonic() - started
    report = {
        "seconds": seconds,
        "progress_reports": len(positions),
        "vm_hwm_bytes": _vm_hwm(),
        "rss_after_imports_bytes": rss_before,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    sys.stdout.write(json.dumps(report) + "\n")


def fill_to(deployment: SandboxDeployment, megabytes: int) -> int:
    """Add rows until the database is about ``megabytes`` MiB (within a few MiB)."""
    deployment.psql("CREATE TABLE IF NOT EXISTS bench_rows (id bigint, payload text)")
    size = int(deployment.psql("SELECT pg_database_size(current_database())"))
    while size < megabytes * MIB - 2 * MIB:
        rows = min(500_000, max(5_000, (megabytes * MIB - size) // ROW_BYTES))
        deployment.psql(INSERT_ROWS.format(rows=rows))
        size = int(deployment.psql("SELECT pg_database_size(current_database())"))
    deployment.psql("VACUUM ANALYZE bench_rows")
    return int(deployment.psql("SELECT pg_database_size(current_database())"))


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")}


def through_specivod(deployment: SandboxDeployment, dump: Path) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.restore_database",
            "--worker",
            str(deployment.directory),
            str(dump),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=_environment(),
    )
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return report


def plain(deployment: SandboxDeployment, dump: Path) -> dict[str, Any]:
    command = ["docker", "compose", "--project-directory", str(deployment.directory)]
    command += ["exec", "-T", "db", "pg_restore", "--single-transaction", "--clean"]
    command += ["--if-exists", *CONNECTION]
    started = time.monotonic()
    with dump.open("rb") as stream:
        subprocess.run(command, stdin=stream, check=True, env=_environment())
    return {"seconds": time.monotonic() - started}


def _settle(deployment: SandboxDeployment) -> None:
    """Start each run from the same place: the previous restore's pages written out."""
    deployment.psql("CHECKPOINT")
    os.sync()


def _dump(deployment: SandboxDeployment, target: Path) -> int:
    command = ["docker", "compose", "--project-directory", str(deployment.directory)]
    command += ["exec", "-T", "db", "pg_dump", "-Fc", *CONNECTION]
    with target.open("wb") as stream:
        subprocess.run(command, stdout=stream, check=True, env=_environment())
    return target.stat().st_size


def measure(deployment: SandboxDeployment, scratch: Path, megabytes: int) -> dict[str, Any]:
    database_bytes = fill_to(deployment, megabytes)
    dump = scratch / "bench.dump"
    dump_bytes = _dump(deployment, dump)
    deployment.compose("stop", "api")
    rows = deployment.psql("SELECT count(*) FROM bench_rows")
    print(
        f"database: {database_bytes / MIB:.0f} MiB, dump {dump_bytes / MIB:.0f} MiB; "
        f"{ROUNDS} rounds",
        flush=True,
    )
    specivod_runs: list[dict[str, Any]] = []
    plain_runs: list[dict[str, Any]] = []
    for number in range(ROUNDS):
        sides = [(specivod_runs, through_specivod), (plain_runs, plain)]
        for runs, side in sides if number % 2 == 0 else reversed(sides):
            _settle(deployment)
            runs.append(side(deployment, dump))
            runs[-1]["load_average_1m"] = os.getloadavg()[0]
        print(
            f"  round {number + 1}: specivod {specivod_runs[-1]['seconds']:.1f} s, "
            f"plain {plain_runs[-1]['seconds']:.1f} s, "
            f"peak RSS {specivod_runs[-1]['peak_rss_bytes'] / MIB:.1f} MiB "
            f"(VmHWM {specivod_runs[-1]['vm_hwm_bytes'] / MIB:.1f} MiB)",
            flush=True,
        )
    if deployment.psql("SELECT count(*) FROM bench_rows") != rows:
        raise RuntimeError("the restored database does not have the dumped rows")
    deployment.compose("start", "api")
    specivod_median = statistics.median(run["seconds"] for run in specivod_runs)
    plain_median = statistics.median(run["seconds"] for run in plain_runs)
    return {
        "database_bytes": database_bytes,
        "dump_bytes": dump_bytes,
        "rounds": ROUNDS,
        "specivod": specivod_runs,
        "plain": plain_runs,
        "specivod_median_seconds": round(specivod_median, 3),
        "plain_median_seconds": round(plain_median, 3),
        "throughput_ratio_plain_over_specivod": round(plain_median / specivod_median, 3),
        "specivod_throughput_mib_s": round(database_bytes / MIB / specivod_median, 1),
        "plain_throughput_mib_s": round(database_bytes / MIB / plain_median, 1),
        "specivod_peak_rss_bytes": max(run["peak_rss_bytes"] for run in specivod_runs),
        "specivod_vm_hwm_bytes": max(run["vm_hwm_bytes"] for run in specivod_runs),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="specivod-bench-") as directory:
        scratch = Path(directory)
        engine = start_engine(scratch / "dockerd.log")
        registry = start_registry(scratch / "registry")
        try:
            context = multiprocessing.get_context("spawn")
            with context.Pool(1) as pool:
                images = ImageNames(pool.apply(_build_images, (registry.address,)))
            deployment = create_deployment(scratch, images)
            try:
                sizes = [measure(deployment, scratch, megabytes) for megabytes in SIZES_MB]
                postgres = deployment.psql("SHOW server_version")
            finally:
                deployment.down()
        finally:
            registry.stop()
            # Other sessions may be using an engine this one started: leave it running.
            engine.client.close()
    results = {
        "command": "plain: docker compose exec -T db pg_restore --single-transaction --clean "
        "--if-exists -h 127.0.0.1 -U specivo -d specivo < dump",
        "benchmark_process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        * 1024,
        "machine": {
            "cpus": os.cpu_count(),
            "arch": platform.machine(),
            "python": platform.python_version(),
            "postgresql": postgres,
            "compose": _version(["docker", "compose", "version", "--short"]),
        },
        "sizes": sizes,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], sys.argv[3])
    else:
        main()
