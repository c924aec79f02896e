"""specivod keeps a self-hosted Specivo deployment up to date, and undoes an upgrade that goes
wrong.

Layering rule: ``domain`` is pure; ``engine`` depends on its ports (``engine.ports``),
never on docker, aiohttp or the file system directly; ``cli`` only parses and dispatches.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("specivod")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"
