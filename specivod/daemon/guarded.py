"""One engine for one daemon operation: one at a time in this daemon (the host lock then keeps
CLI commands out while it runs), the verification veto installed, and the totals re-read after."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from specivod.commands.runtime import open_engine
from specivod.engine.service import Engine

if TYPE_CHECKING:
    from specivod.daemon.service import Daemon


class GuardedEngine:
    """One engine for one operation, one at a time in this daemon, with the veto installed and
    the totals re-read afterwards."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._context: Any = None

    async def __aenter__(self) -> Engine:
        daemon = self._daemon
        await daemon.busy.acquire()
        daemon.idle.clear()
        try:
            self._context = open_engine(daemon.settings, daemon.report, daemon.stop_flag)
            engine: Engine = await self._context.__aenter__()
        except BaseException:
            self._release()
            raise
        engine.context.gate.veto = daemon.vetoes
        return engine

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._context.__aexit__(*exc)
        finally:
            self._release()

    def _release(self) -> None:
        daemon = self._daemon
        daemon.running = None
        daemon.vetoes.clear()
        daemon.refresh()
        daemon.idle.set()
        daemon.busy.release()
