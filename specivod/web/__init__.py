"""The daemon's HTTP face (aiohttp): ``/metrics``, ``/healthz``, ``/api/v1/status`` and the
Alertmanager webhook.

Rule: this package translates HTTP to calls and back, nothing more. It never touches the engine or
the journal; everything it needs (metrics text, status, the last upgrade, the rollback to start)
is injected by the daemon. Bad input is always answered with a 4xx, never a 5xx, and a request is
answered at once: slow work runs in the background.
"""
