"""Writing results: JSON objects to stdout, one-line errors to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def say(text: str) -> None:
    sys.stdout.write(text + "\n")


def error(text: str) -> None:
    sys.stderr.write(f"specivod: {text}\n")
