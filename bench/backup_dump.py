"""Database dump through specivod against a plain ``docker compose exec -T db pg_dump -Fc > file``,
on the real sandbox stack, at two database sizes (the larger at least 1 GB).

The database is filled server-side (``generate_series``) with rows of md5 hex text, which
``pg_dump -Fc`` compresses only about 2:1. Per size, rounds alternate specivod / plain. The
specivod side is one whole ``Backups.create()`` (schema fingerprint, dump streamed to disk,
fsync, sha256, ``pg_restore --list`` validation, data dir archive, manifest, retention) in a
fresh worker process that reports its own peak RSS (``getrusage(RUSAGE_SELF)``), so nothing the
benchmark itself allocates is counted. The plain side is timed around the compose process.

Writes bench/results/backup_dump.json. Run: ``.venv/bin/python -m bench.backup_dump``
(``BENCH_ROUNDS``, ``BENCH_SIZES_MB`` such as ``256,1100`` override the defaults).
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

from sandbox.deployment import SandboxDeployment, create_deployment
from sandbox.dockerd import start_engine
from sandbox.images import ImageNames, build_and_push
from tests.support.registry import start_registry

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SIZES_MB = [int(size) for size in os.environ.get("BENCH_SIZES_MB", "256,1100").split(",")]
INSERT_ROWS = (
    "INSERT INTO bench_rows SELECT n, md5(random()::text) || md5(random()::text) "
    "|| md5(random()::text) || md5(random()::text) "
    "FROM generate_series(1, 500000) n"
)
RESULTS = Path(__file__).parent / "results" / "backup_dump.json"
MIB = 1 << 20


def worker(project_dir: str, backup_dir: str) -> None:
    """One ``Backups.create()``; prints seconds, sizes and this process's peak RSS as JSON."""
    from specivod.adapters.backup.backups import Backups
    from specivod.adapters.compose import ComposeDeployment
    from specivod.settings import BackupSettings, DeploymentSettings

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    deployment = ComposeDeployment(DeploymentSettings(project_dir=Path(project_dir)))
    backups = Backups(
        BackupSettings.model_validate({"dir": backup_dir, "keep": 1, "min_free_bytes": "1MB"}),
        deployment,
    )
    started = time.monotonic()
    manifest = asyncio.run(backups.create(version=None, reason="benchmark"))
    seconds = time.monotonic() - started
    report = {
        "seconds": seconds,
        "vm_hwm_bytes": _vm_hwm(),
        "dump_bytes": manifest.database.size,
        "durations": manifest.to_json()["durations"],
        "rss_after_imports_bytes": rss_before,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    sys.stdout.write(json.dumps(report) + "\n")


def _vm_hwm() -> int:
    """Peak RSS of this process's own address space (not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _build_images(registry: str) -> str:
    """In a child process: the image build holds a rootfs tarball in memory, and a parent's
    peak RSS is inherited by every child it starts (Linux keeps ``maxrss`` across exec)."""
    engine = start_engine(Path(tempfile.gettempdir()) / "specivod-bench-dockerd.log")
    try:
        return build_and_push(engine.client, registry).registry
    finally:
        engine.client.close()


def fill_to(deployment: SandboxDeployment, megabytes: int) -> int:
    deployment.psql("CREATE TABLE IF NOT EXISTS bench_rows (id bigint, payload text)")
    size = int(deployment.psql("SELECT pg_database_size(current_database())"))
    while size < megabytes * MIB:
        deployment.psql(INSERT_ROWS)
        size = int(deployment.psql("SELECT pg_database_size(current_database())"))
    deployment.psql("VACUUM ANALYZE bench_rows")
    return size


def through_specivod(deployment: SandboxDeployment, backup_dir: Path) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.backup_dump",
            "--worker",
            str(deployment.directory),
            str(backup_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("SPECIVO")},
    )
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return report


def plain(deployment: SandboxDeployment, target: Path) -> dict[str, Any]:
    command = ["docker", "compose", "--project-directory", str(deployment.directory)]
    command += ["exec", "-T", "db", "pg_dump", "-Fc", "-h", "127.0.0.1", "-U", "specivo"]
    started = time.monotonic()
    with target.open("wb") as stream:
        subprocess.run([*command, "-d", "specivo"], stdout=stream, check=True)
    seconds = time.monotonic() - started
    size = target.stat().st_size
    target.unlink()
    return {"seconds": seconds, "dump_bytes": size}


def measure(deployment: SandboxDeployment, scratch: Path, megabytes: int) -> dict[str, Any]:
    database_bytes = fill_to(deployment, megabytes)
    print(f"database: {database_bytes / MIB:.0f} MiB; {ROUNDS} rounds", flush=True)
    specivod_runs, plain_runs = [], []
    for number in range(ROUNDS):
        specivod_runs.append(through_specivod(deployment, scratch / "backups"))
        plain_runs.append(plain(deployment, scratch / "plain.dump"))
        print(
            f"  round {number + 1}: specivod {specivod_runs[-1]['seconds']:.1f} s, "
            f"plain {plain_runs[-1]['seconds']:.1f} s, "
            f"peak RSS {specivod_runs[-1]['peak_rss_bytes'] / MIB:.1f} MiB "
            f"(VmHWM {specivod_runs[-1]['vm_hwm_bytes'] / MIB:.1f} MiB)",
            flush=True,
        )
    specivod_median = statistics.median(run["seconds"] for run in specivod_runs)
    plain_median = statistics.median(run["seconds"] for run in plain_runs)
    return {
        "database_bytes": database_bytes,
        "dump_bytes": plain_runs[-1]["dump_bytes"],
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


def _version(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""


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
            engine.stop()
    results = {
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
