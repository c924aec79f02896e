"""Data-dir snapshots and the sync restore against plain full copies, on this machine's disk.

A data dir of 10 GB in 100,000 files (``--scale 0.1``: 1 GB in 10,000) in nested directories,
sizes spread from 1 KiB to 4 MiB around a 100 KiB mean. Side by side in one run:

- ``cp -a`` of the data dir (then ``sync``) vs the first snapshot (which syncs its file system);
- a second snapshot after 1 % of the files changed vs the first;
- the sync restore after a failed release changed 1 % (and added files) vs a full copy of the
  snapshot back (``cp -a``, then ``sync``), which is what an extraction costs at best;
- the peak RSS of the child process that takes each snapshot or restore (``getrusage``);
- the disk the second snapshot takes: blocks of its own new inodes, its directories and index;
- the CPU seconds (user + system, all threads, its worker processes included) of each snapshot,
  which a loaded machine changes less than the wall time, and the load average at the start and
  the end;
- the peak RSS of the snapshot's worker processes (``snapshot_pool``): the largest one's, and the
  walking process's plus that many times the largest one's, an upper bound of all together.

Page caches are dropped before each timed phase when /proc/sys/vm/drop_caches is writable (the
result says whether it was). Phases that are cheap are repeated (``--repeats``) and their median
kept. With ``--baseline REV`` the snapshots are also taken by the code of that git revision (its
``specivod``, exported to the scratch directory, run by this file's worker), each phase next to
this code's on the same data (which one goes first alternates from one repeat to the next), so
a change is measured before and after in one run (under ``"baseline"``). Writes ``--out`` (default
bench/results/snapshot-<date>.json) and prints a summary. The scratch directory
(``--dir``, default /var/tmp) gets everything and is removed at the end.

Run: ``.venv/bin/python -m bench.snapshot [--scale 0.1] [--repeats 3] [--dir /var/tmp]
[--baseline HEAD] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
MIB = 1 << 20
FILES_AT_FULL_SCALE = 100_000
BYTES_AT_FULL_SCALE = 10 * 1000**3


def worker(kind: str, *arguments: str) -> None:
    """One snapshot or sync in this fresh process; prints seconds, summary and peak RSS."""
    from specivod.adapters.backup.datasync import sync_from_snapshot
    from specivod.adapters.backup.snapshot import Previous, take_snapshot

    ready = resource.getrusage(resource.RUSAGE_SELF)  # after the imports: not counted
    started = time.monotonic()
    if kind == "snapshot":
        source, tree, index, previous = arguments
        earlier = Previous(Path(previous), Path(f"{previous}.index")) if previous else None
        summary: Any = take_snapshot(Path(source), Path(tree), Path(index), earlier)
    else:
        tree, index, data, replaced = arguments
        summary = sync_from_snapshot(Path(tree), Path(index), Path(data), Path(replaced))
    seconds = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)  # the walk's worker processes
    report = {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime - ready.ru_utime - ready.ru_stime,
        "workers": workers_of(arguments[-1]) if kind == "snapshot" else 0,
        "workers_cpu_seconds": workers.ru_utime + workers.ru_stime,
        "summary": summary.__dict__,
        "peak_rss_bytes": _vm_hwm(),
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "worker_peak_rss_bytes": workers.ru_maxrss * 1024,
    }
    report["cpu_seconds"] += report["workers_cpu_seconds"]
    report["all_peak_rss_bytes"] = (
        report["peak_rss_bytes"] + report["workers"] * report["worker_peak_rss_bytes"]
    )
    sys.stdout.write(json.dumps(report) + "\n")


def workers_of(previous: str) -> int:
    """The worker processes a snapshot against ``previous`` starts (none in older code)."""
    try:
        from specivod.adapters.backup.snapshot_pool import planned_workers
    except ImportError:
        return 0
    return planned_workers(Path(f"{previous}.index")) if previous else 0


def _vm_hwm() -> int:
    """Peak RSS of this process's own address space (``ru_maxrss`` carries the parent's peak
    across exec, so it is reported too but not judged)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def in_child(kind: str, *arguments: str, code: Path | None = None) -> dict[str, Any]:
    """``code``: a directory with another ``specivod`` and ``bench`` to run instead of these."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.snapshot", "--worker", kind, *arguments],
        capture_output=True,
        text=True,
        check=True,
        cwd=code,
    )
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return report


def drop_caches() -> bool:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def timed(command: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True)
    subprocess.run(["sync"], check=True)
    return time.monotonic() - started


def make_data(root: Path, files: int, total: int, seed: int = 1) -> list[str]:
    """``files`` files in 3 levels of directories whose sizes sum to about ``total``."""
    rng = random.Random(seed)
    noise = rng.randbytes(64 * MIB)
    weights = [rng.lognormvariate(0, 1.2) for _ in range(files)]
    scale = total / sum(weights)
    paths = []
    for number, weight in enumerate(weights):
        leaf = number // 100  # about 100 files a directory
        relative = f"u{leaf % 10}/a{leaf // 10 % 10}/b{leaf // 100:03d}/f{number:06d}.bin"
        size = max(1024, min(int(weight * scale), 4 * MIB))
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        offset = rng.randrange(0, len(noise) - size)
        path.write_bytes(noise[offset : offset + size])
        paths.append(relative)
    return paths


def change_one_percent(root: Path, paths: list[str], salt: int) -> int:
    """Rewrite 1 % of the files with other bytes; the bytes written."""
    written = 0
    rng = random.Random(salt)
    for relative in rng.sample(paths, len(paths) // 100):
        path = root / relative
        size = path.stat().st_size
        path.write_bytes(rng.randbytes(size))
        written += size
    return written


def new_inode_bytes(tree: Path, index: Path) -> int:
    """Disk used by what a snapshot added: files only it links (nlink 1), directories, index."""
    used = index.stat().st_blocks * 512
    for directory, _, names in os.walk(tree):
        used += Path(directory).stat().st_blocks * 512
        for name in names:
            status = (Path(directory) / name).lstat()
            if status.st_nlink == 1:
                used += status.st_blocks * 512
    return used


def disk_usage(root: Path) -> int:
    return int(
        subprocess.run(
            ["du", "-sb", str(root)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def export(revision: str, target: Path) -> tuple[str, Path]:
    """The commit of a git revision, and its ``specivod`` in ``target`` with this file as its
    ``bench`` worker (both sides measured by the same worker)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target.mkdir()
    archive = subprocess.run(
        ["git", "archive", commit, "specivod"],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    (target / "bench").mkdir()
    (target / "bench" / "__init__.py").touch()
    shutil.copy(__file__, target / "bench" / "snapshot.py")
    return commit, target


def run(scratch: Path, scale: float, repeats: int, baseline: str | None) -> dict[str, Any]:
    files, total = int(FILES_AT_FULL_SCALE * scale), int(BYTES_AT_FULL_SCALE * scale)
    data, backups, earlier = scratch / "data", scratch / "backups", scratch / "baseline-backups"
    backups.mkdir(mode=0o700)
    commit, code = (None, None) if baseline is None else export(baseline, scratch / "baseline")
    if code is not None:
        earlier.mkdir(mode=0o700)
    started = time.monotonic()
    paths = make_data(data, files, total)
    data_bytes = disk_usage(data)
    print(
        f"data dir: {files} files, {data_bytes / 1e9:.2f} GB "
        f"({time.monotonic() - started:.0f} s to make)",
        flush=True,
    )
    dropped = drop_caches()

    cp_seconds = timed(["cp", "-a", str(data), str(scratch / "cp-copy")])
    shutil.rmtree(scratch / "cp-copy")
    old: dict[str, Any] = {
        "first_snapshot": None,
        "second_snapshot_seconds": [],
        "second_snapshot_cpu_seconds": [],
    }
    load_at_start = os.getloadavg()
    if code is not None:
        drop_caches()
        old["first_snapshot"] = in_child(
            "snapshot", str(data), str(earlier / "one"), str(earlier / "one.index"), "", code=code
        )
        print(f"baseline first snapshot {old['first_snapshot']['seconds']:.1f} s", flush=True)
    drop_caches()
    first = in_child("snapshot", str(data), str(backups / "one"), str(backups / "one.index"), "")
    print(f"cp -a + sync {cp_seconds:.1f} s; first snapshot {first['seconds']:.1f} s", flush=True)

    seconds_two: list[float] = []
    cpu_two: list[float] = []
    rss_two, used_two, all_rss_two, workers_two = [], [], [], []
    base = "one"
    for number in range(repeats):
        change_one_percent(data, paths, salt=100 + number)
        name = f"two-{number}"
        if code is not None and number % 2 == 1:
            _second_baseline(data, earlier, (name, base), code, old)
        drop_caches()
        two = in_child(
            "snapshot",
            str(data),
            str(backups / name),
            str(backups / f"{name}.index"),
            str(backups / base),
        )
        seconds_two.append(two["seconds"])
        cpu_two.append(two["cpu_seconds"])
        rss_two.append(two["peak_rss_bytes"])
        all_rss_two.append(two["all_peak_rss_bytes"])
        workers_two.append(two["workers"])
        used_two.append(new_inode_bytes(backups / name, backups / f"{name}.index"))
        print(
            f"  second snapshot {two['seconds']:.2f} s ({two['cpu_seconds']:.2f} s CPU), "
            f"{two['summary']['files_copied']} copied",
            flush=True,
        )
        if code is not None and number % 2 == 0:
            _second_baseline(data, earlier, (name, base), code, old)
        shutil.rmtree(backups / base)  # each snapshot must stand alone
        (backups / f"{base}.index").unlink()
        base = name
    last = base
    if code is not None:
        shutil.rmtree(earlier)

    drop_caches()
    full_restore = timed(["cp", "-a", str(backups / last), str(scratch / "restored")])
    shutil.rmtree(scratch / "restored")
    seconds_sync, cpu_sync, rss_sync, synced = [], [], [], {}
    for number in range(repeats):
        change_one_percent(data, paths, salt=200 + number)
        (data / f"added-{number}").mkdir()
        (data / f"added-{number}" / "upload").write_bytes(b"x" * MIB)
        drop_caches()
        replaced = scratch / f"data.replaced-{number}"
        restore = in_child(
            "sync", str(backups / last), str(backups / f"{last}.index"), str(data), str(replaced)
        )
        seconds_sync.append(restore["seconds"])
        cpu_sync.append(restore["cpu_seconds"])
        rss_sync.append(restore["peak_rss_bytes"])
        synced = restore["summary"]
        print(
            f"  restore {restore['seconds']:.2f} s ({restore['cpu_seconds']:.2f} s CPU), "
            f"{synced['copied']} copied",
            flush=True,
        )
    first_rate = data_bytes / first["seconds"]
    cp_rate = data_bytes / cp_seconds
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
        "scale": scale,
        "files": files,
        "data_bytes": data_bytes,
        "drop_caches_worked": dropped,
        "repeats": repeats,
        "cp_a_and_sync_seconds": cp_seconds,
        "first_snapshot": first,
        "first_vs_cp_throughput": first_rate / cp_rate,
        "second_snapshot_seconds": seconds_two,
        "second_snapshot_cpu_seconds": cpu_two,
        "second_vs_first_time": median(seconds_two) / first["seconds"],
        "second_vs_cp_time": median(seconds_two) / cp_seconds,
        "second_snapshot_new_bytes": used_two,
        "second_snapshot_disk_share": median(used_two) / data_bytes,
        "full_copy_restore_seconds": full_restore,
        "sync_restore_seconds": seconds_sync,
        "sync_restore_cpu_seconds": cpu_sync,
        "sync_vs_full_copy_time": median(seconds_sync) / full_restore,
        "sync_summary": synced,
        "peak_rss_bytes": max([first["peak_rss_bytes"], *rss_two, *rss_sync]),
        "all_processes_peak_rss_bytes": max(
            [first.get("all_peak_rss_bytes", 0), *all_rss_two, *rss_sync]
        ),
        "second_snapshot_workers": workers_two,
        "baseline": None if code is None else _baseline(str(commit), old, cp_seconds),
        "load_average_start": load_at_start,
        "load_average_end": os.getloadavg(),
    }


def _second_baseline(
    data: Path, earlier: Path, names: tuple[str, str], code: Path, old: dict[str, Any]
) -> None:
    """The baseline's second snapshot of the same data (``names``: it and the previous one)."""
    name, base = names
    drop_caches()
    before = in_child(
        "snapshot",
        str(data),
        str(earlier / name),
        str(earlier / f"{name}.index"),
        str(earlier / base),
        code=code,
    )
    old["second_snapshot_seconds"].append(before["seconds"])
    old["second_snapshot_cpu_seconds"].append(before["cpu_seconds"])
    print(
        f"  baseline second snapshot {before['seconds']:.2f} s ({before['cpu_seconds']:.2f} s CPU)",
        flush=True,
    )
    shutil.rmtree(earlier / base)
    (earlier / f"{base}.index").unlink()


def _baseline(commit: str, old: dict[str, Any], cp_seconds: float) -> dict[str, Any]:
    seconds = old["second_snapshot_seconds"]
    return {
        "revision": commit,
        "first_snapshot": old["first_snapshot"],
        "first_vs_cp_throughput": cp_seconds / old["first_snapshot"]["seconds"],
        "second_snapshot_seconds": seconds,
        "second_snapshot_cpu_seconds": old["second_snapshot_cpu_seconds"],
        "second_vs_cp_time": median(seconds) / cp_seconds,
    }


def summarize(result: dict[str, Any]) -> str:
    first, cp = result["first_snapshot"]["seconds"], result["cp_a_and_sync_seconds"]
    second, restore = (
        median(result["second_snapshot_seconds"]),
        median(result["sync_restore_seconds"]),
    )
    old = result.get("baseline")
    compared = []
    if old:
        compared = [
            f"baseline {old['revision'][:12]}: first snapshot "
            f"{old['first_snapshot']['seconds']:.1f} s ({old['first_vs_cp_throughput']:.2f}x cp), "
            f"second median {median(old['second_snapshot_seconds']):.2f} s "
            f"({old['second_vs_cp_time']:.3f}x cp)",
            f"CPU: first snapshot {old['first_snapshot']['cpu_seconds']:.1f} s (this code "
            f"{result['first_snapshot']['cpu_seconds']:.1f} s), second median "
            f"{median(old['second_snapshot_cpu_seconds']):.2f} s (this code "
            f"{median(result['second_snapshot_cpu_seconds']):.2f} s)",
        ]
    return "\n".join(
        [
            f"{result['files']} files, {result['data_bytes'] / 1e9:.2f} GB; "
            f"caches dropped: {result['drop_caches_worked']}",
            f"first snapshot {first:.1f} s vs cp -a + sync {cp:.1f} s: "
            f"{result['first_vs_cp_throughput']:.2f}x the throughput (target >= 0.9)",
            f"second snapshot (1 % changed), median {second:.2f} s: "
            f"{result['second_vs_first_time']:.3f}x the first, "
            f"{result['second_vs_cp_time']:.3f}x cp -a (target <= 0.1)",
            f"sync restore, median {restore:.2f} s vs full copy "
            f"{result['full_copy_restore_seconds']:.1f} s: "
            f"{result['sync_vs_full_copy_time']:.3f}x (target <= 0.1)",
            f"peak RSS {result['peak_rss_bytes'] / MIB:.0f} MiB in the walking process, "
            f"{result['all_processes_peak_rss_bytes'] / MIB:.0f} MiB with its "
            f"{max(result['second_snapshot_workers'])} workers at most (target < 150)",
            f"second snapshot disk {result['second_snapshot_disk_share'] * 100:.2f} % "
            "of the data dir (target <= 2 %)",
            f"load average {result['load_average_start'][0]:.1f} at the start, "
            f"{result['load_average_end'][0]:.1f} at the end ({result['host']['cpus']} CPUs)",
            *compared,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--worker", nargs="+")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--baseline", metavar="REV", help="also run this git revision's code")
    parser.add_argument("--out", type=Path, help="the result file (default: by date)")
    options = parser.parse_args()
    if options.worker:
        worker(*options.worker)
        return
    scratch = Path(tempfile.mkdtemp(prefix="specivod-bench-snapshot-", dir=options.dir))
    try:
        result = run(scratch, options.scale, options.repeats, options.baseline)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    target = options.out or RESULTS / f"snapshot-{datetime.date.today().isoformat()}.json"
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(summarize(result))
    print(f"written to {target}")


if __name__ == "__main__":
    main()
