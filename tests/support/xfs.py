"""A loop-mounted XFS image (reflinks; the root file system here is ext4) for the snapshot tests,
and FIEMAP's shared-extent flag to tell a reflink from a copy."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FIEMAP_EXTENT_SHARED = 0x2000


@contextlib.contextmanager
def mounted_xfs(directory: Path, size: int) -> Iterator[Path]:
    """An XFS of ``size`` bytes mounted at ``directory``/xfs; unmounted (lazily if busy) and its
    image deleted at the end, failure included."""
    if os.geteuid() != 0:
        pytest.fail("mounting an XFS image needs root")
    if shutil.which("mkfs.xfs") is None:
        pytest.fail("mkfs.xfs is not installed (apt-get install xfsprogs; scripts/bootstrap)")
    image, mount_point = directory / "xfs.img", directory / "xfs"
    with image.open("wb") as stream:
        stream.truncate(size)
    subprocess.run(["mkfs.xfs", "-q", "-f", str(image)], check=True)
    mount_point.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)
        image.unlink()


def shared(path: Path) -> bool:
    """Whether every extent of ``path`` is shared with another file (FIEMAP's shared flag)."""
    report = subprocess.run(
        ["xfs_io", "-r", "-c", "fiemap -v", str(path)], check=True, capture_output=True, text=True
    ).stdout
    flags = [
        int(line.split()[-1], 16) for line in report.splitlines() if line.strip()[:1].isdigit()
    ]
    return bool(flags) and all(flag & FIEMAP_EXTENT_SHARED for flag in flags)
