"""Alertmanager webhook deliveries (payload version 4) as Alertmanager sends them, built in one
place for the unit tests, the real-stack tests and the soak."""

from __future__ import annotations

from datetime import datetime
from typing import Any

GROUP_KEY = '{}:{alertname="SpecivoDown"}'


def alert(
    *,
    started: datetime,
    fingerprint: str,
    status: str = "firing",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One alert of a delivery; ``labels`` default to a SpecivoDown page."""
    return {
        "status": status,
        "labels": labels or {"alertname": "SpecivoDown", "severity": "page"},
        "annotations": {"summary": "down"} if annotations is None else annotations,
        "startsAt": started.isoformat().replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": fingerprint,
    }


def delivery(*alerts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A version 4 delivery of ``alerts`` to the receiver "specivod"; ``extra`` replaces fields."""
    body: dict[str, Any] = {
        "version": "4",
        "groupKey": GROUP_KEY,
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "specivod",
        "groupLabels": {"alertname": "SpecivoDown"},
        "commonLabels": alerts[0]["labels"] if alerts else {"alertname": "SpecivoDown"},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts),
    }
    body.update(extra)
    return body
