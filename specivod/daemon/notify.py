"""systemd notification (``Type=notify``) through the ``sdnotify`` package.

Rule: outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, and a notification never
raises: a daemon must not die because its supervisor's socket went away. Nor does it block: the
socket is non-blocking, so a supervisor that does not read (a full queue) loses a message rather
than stopping the event loop.
"""

from __future__ import annotations

import os

import sdnotify


class Notifier:
    """Reads ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` once, when created."""

    def __init__(self) -> None:
        self._env = {key: os.environ.get(key) for key in ("WATCHDOG_USEC", "WATCHDOG_PID")}
        self._systemd = sdnotify.SystemdNotifier() if os.environ.get("NOTIFY_SOCKET") else None
        if self._systemd is not None and self._systemd.socket is not None:
            self._systemd.socket.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._systemd is not None

    def _send(self, message: str) -> None:
        if self._systemd is not None:
            self._systemd.notify(message)

    def ready(self) -> None:
        self._send("READY=1")

    def status(self, text: str) -> None:
        """One line for ``systemctl status``; newlines would end the message early."""
        self._send("STATUS=" + " ".join(text.split()))

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for ``seconds`` more from now before the current start/stop timeout fires."""
        self._send(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1_000_000))}")

    def watchdog_interval(self) -> float | None:
        """How often to send WATCHDOG=1: half of ``WATCHDOG_USEC``, or None when no watchdog is
        set for this process."""
        usec = self._env["WATCHDOG_USEC"] or ""
        pid = self._env["WATCHDOG_PID"]
        if not usec.isdigit() or int(usec) == 0:
            return None
        if pid is not None and pid.isdigit() and int(pid) != os.getpid():
            return None
        return int(usec) / 2 / 1_000_000
