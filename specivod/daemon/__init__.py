"""The asyncio service: named, guarded root tasks (poller, scheduler, web, watchdog), systemd
notification, signals, staged shutdown.

Rule: this layer only runs and supervises; decisions belong to the engine and the domain. When one
root task dies, the others are stopped and the daemon exits non-zero with one line saying which
task died and why; signals only resolve a future.
"""
