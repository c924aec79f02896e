"""A small root file system for the test images, made from the host's own files: busybox, the
host's PostgreSQL 15 (server and client tools) and every library they load. No image hub needed."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

POSTGRES_HOME = Path("/usr/lib/postgresql/15")
POSTGRES_SHARE = Path("/usr/share/postgresql/15")
BUSYBOX = Path("/bin/busybox")
LOADER = Path("/lib64/ld-linux-x86-64.so.2")
_SKIPPED = ("llvmjit", "bitcode")
_APPLETS = (
    "sh",
    "cat",
    "echo",
    "sleep",
    "ls",
    "mkdir",
    "rm",
    "mv",
    "cp",
    "chown",
    "chmod",
    "wget",
    "httpd",
    "setpriv",
    "env",
    "test",
    "[",
    "printf",
    "grep",
    "sed",
    "seq",
    "date",
    "id",
    "kill",
    "touch",
    "tr",
    "wc",
    "head",
    "tail",
    "sha256sum",
    "find",
    "xargs",
    "true",
    "false",
    "stat",
    "dd",
    "cut",
    "sort",
    "tar",
    "du",
)
POSTGRES_UID = 999


def _wanted(path: Path) -> bool:
    return not any(part.startswith(_SKIPPED) for part in path.parts)


def _binaries() -> list[Path]:
    found = [p for p in (POSTGRES_HOME / "bin").iterdir() if p.is_file()]
    found += [p for p in (POSTGRES_HOME / "lib").rglob("*.so") if _wanted(p)]
    return found


def _libraries(binaries: list[Path]) -> set[Path]:
    libraries: set[Path] = set()
    for binary in binaries:
        result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
        for line in result.stdout.splitlines():
            parts = line.split("=>")
            if len(parts) == 2 and parts[1].strip().startswith("/"):
                libraries.add(Path(parts[1].split()[0]))
    return libraries


def _add_text(archive: tarfile.TarFile, name: str, text: str, mode: int = 0o644) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    archive.addfile(info, io.BytesIO(data))


def _add_dir(archive: tarfile.TarFile, name: str, mode: int = 0o755, uid: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.uid = info.gid = uid
    archive.addfile(info)


def write_rootfs(target: Path) -> Path:
    """Write the root file system as a tar archive to ``target``."""
    with tarfile.open(target, "w") as archive:
        for directory in ("bin", "etc", "tmp", "var", "var/run", "run", "data", "www", "lib64"):
            _add_dir(archive, directory, 0o1777 if directory == "tmp" else 0o755)
        archive.add(BUSYBOX, "bin/busybox")
        for applet in _APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            archive.addfile(info)
        archive.add(POSTGRES_HOME, str(POSTGRES_HOME).lstrip("/"), filter=_skip_jit)
        archive.add(POSTGRES_SHARE, str(POSTGRES_SHARE).lstrip("/"))
        for zone in (Path("/usr/share/zoneinfo/UTC"), Path("/usr/share/zoneinfo/Etc/UTC")):
            archive.add(zone.resolve(), str(zone).lstrip("/"))
        for library in sorted(_libraries(_binaries())):
            archive.add(library.resolve(), str(library).lstrip("/"))
        archive.add(LOADER.resolve(), str(LOADER).lstrip("/"))
        _add_text(
            archive,
            "etc/passwd",
            f"root:x:0:0:root:/root:/bin/sh\n"
            f"postgres:x:{POSTGRES_UID}:{POSTGRES_UID}:PostgreSQL:/var/lib/postgresql:/bin/sh\n",
        )
        _add_text(archive, "etc/group", f"root:x:0:\npostgres:x:{POSTGRES_UID}:\n")
        _add_dir(archive, "var/lib", 0o755)
        _add_dir(archive, "var/lib/postgresql", 0o755, POSTGRES_UID)
        _add_dir(archive, "var/lib/postgresql/data", 0o700, POSTGRES_UID)
    return target


def _skip_jit(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return info if _wanted(Path(info.name)) else None
