"""Durations written the way operators write them: ``90s``, ``6h``, ``1h30m``, ``250ms``."""

import math
import re
from datetime import timedelta

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


MAX_DURATION = timedelta(days=3650)
"""Longer than any interval, budget or age a setting means: a bigger value is a typo."""


def parse_duration(text: object) -> timedelta:
    """Parse ``90s``/``6h``/``1h30m``/``250ms``; a bare number means seconds. ``ValueError`` for
    anything else, a negative value, or one longer than ``MAX_DURATION``."""
    try:
        value = _parse(text)
    except (OverflowError, ArithmeticError):
        value = MAX_DURATION + timedelta(days=1)
    if value > MAX_DURATION:
        raise ValueError(f"duration {text!r} is longer than {MAX_DURATION.days} days")
    return value


def _parse(text: object) -> timedelta:
    if isinstance(text, timedelta):
        if text < timedelta():
            raise ValueError(f"duration must not be negative, got {text}")
        return text
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError("a duration must be a string like '90s' or a number of seconds")
    if isinstance(text, int | float):
        if math.isnan(text) or text < 0:
            raise ValueError(f"duration must be a non-negative number, got {text}")
        return timedelta(seconds=text)
    compact = text.strip().replace(" ", "")
    if not compact:
        raise ValueError("empty duration")
    if re.fullmatch(r"\d+(\.\d+)?", compact):
        return timedelta(seconds=float(compact))
    position = 0
    total = timedelta()
    for match in _PART.finditer(compact):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(compact):
        raise ValueError(
            f"invalid duration {text!r}: use a number with a unit, e.g. '90s', '6h', '1h30m'"
        )
    return total


def format_duration(value: timedelta) -> str:
    """The shortest ``1h30m``-style spelling of ``value`` (sub-second parts as ``ms``)."""
    milliseconds = round(value.total_seconds() * 1000)
    if milliseconds == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, milliseconds = divmod(milliseconds, size)
        if count:
            parts.append(f"{count}{unit}")
    if milliseconds:
        parts.append(f"{milliseconds}ms")
    return "".join(parts)
