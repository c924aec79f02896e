"""The outside world behind narrow Protocols: the registry, docker compose and the Docker Engine,
backups (PostgreSQL and the data dir), the clock, systemd.

Rule: every adapter raises the typed errors of ``specivod.domain.errors``; nothing above this
package imports docker, aiohttp or subprocess handling.
"""
