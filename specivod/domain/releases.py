"""What a release says about itself: the OCI ``org.opencontainers.image.*`` keys of its image
(annotations over labels), the operator's release-notes link, and whether the publisher marked it
as needing a person.

Rule: publisher text is untrusted. Keys and values are bounded in number and length and cleaned
of control characters before anything shows or matches them; a release whose text cannot be read
is never treated as marked (reading it must not block an upgrade).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

OCI = "org.opencontainers.image."
SHOWN_KEYS = tuple(OCI + name for name in ("title", "description", "url", "source", "revision"))
CREATED_KEY = OCI + "created"
MAX_KEYS = 256
MAX_KEY_LENGTH = 256
MAX_VALUE_LENGTH = 1024
MAX_DESCRIPTION_LENGTH = 4096
ELLIPSIS = "…"
NOTES_PLACEHOLDER = "version"


def clean_text(value: str, limit: int) -> str:
    """``value`` without control characters (newlines and tabs kept), at most ``limit``
    characters, an ellipsis marking a cut."""
    kept = "".join(
        char for char in value if char in "\n\t" or unicodedata.category(char)[0] != "C"
    ).strip()
    if len(kept) > limit:
        return kept[: limit - 1].rstrip() + ELLIPSIS
    return kept


def clean_labels(raw: Any) -> dict[str, str]:
    """A JSON ``Labels`` / ``annotations`` object as bounded, cleaned strings; anything else
    (null, a list, non-string values) contributes nothing."""
    if not isinstance(raw, Mapping):
        return {}
    labels: dict[str, str] = {}
    for key, value in raw.items():
        if len(labels) >= MAX_KEYS:
            break
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        name = clean_text(key, MAX_KEY_LENGTH)
        limit = MAX_DESCRIPTION_LENGTH if name == OCI + "description" else MAX_VALUE_LENGTH
        if name:
            labels[name] = clean_text(value, limit)
    return labels


@dataclass(frozen=True)
class ReleaseInfo:
    """One tag's image as the registry describes it, without its layers."""

    tag: str
    digest: str
    labels: dict[str, str] = field(default_factory=dict)
    """Config-blob labels overlaid with manifest and index annotations (annotations win)."""
    image_created: datetime | None = None
    """The config blob's ``created`` (what ``policy.min_age`` uses), timezone-aware or None."""

    def get(self, name: str) -> str | None:
        return self.labels.get(OCI + name)

    def shown(self) -> dict[str, str]:
        """The OCI keys a person reads: title, description, url, source, revision, created."""
        return {key: self.labels[key] for key in (*SHOWN_KEYS, CREATED_KEY) if key in self.labels}


def notes_template_problem(template: str) -> str | None:
    """Why ``template`` is not a usable notes link, or None: an http(s) URL whose only
    placeholder is a plain ``{version}`` (``{{`` and ``}}`` are literal braces)."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as error:
        return f"not a valid template: {error}"
    placeholders = [(name, spec, conv) for _, name, spec, conv in fields if name is not None]
    others = sorted({name or "" for name, _, _ in placeholders if name != NOTES_PLACEHOLDER})
    if others:
        return "only {version} may be used, not " + ", ".join(f"{{{name}}}" for name in others)
    if any(spec or conv for _, spec, conv in placeholders):
        return "write {version} without a format spec or conversion"
    if not re.match(r"^https?://", template):
        return "must be an http(s) URL"
    return None


def notes_link(template: str | None, version: str) -> str | None:
    """The notes link for ``version`` (a template that passed ``notes_template_problem``)."""
    return None if template is None else template.format(version=version)


@dataclass(frozen=True)
class AttentionRule:
    """How the publisher marks a release that needs a person: a label (annotation) with a value,
    and/or a regex found anywhere in the description."""

    label: tuple[str, str] | None = None
    pattern: re.Pattern[str] | None = None

    @property
    def configured(self) -> bool:
        return self.label is not None or self.pattern is not None

    def reason(self, info: ReleaseInfo) -> str | None:
        """Why ``info`` needs a person, or None."""
        if self.label is not None:
            name, value = self.label
            if info.labels.get(name) == value:
                return f"marked for attention ({name}={value})"
        if self.pattern is not None:
            description = info.get("description") or ""
            found = self.pattern.search(description)
            if found is not None:
                excerpt = clean_text(" ".join(found.group(0).split()), 80)
                return f"marked for attention (description matches {excerpt!r})"
        return None


def one_line(text: str, limit: int = 200) -> str:
    """Publisher text for one line of a terminal or log: whitespace runs become one space."""
    return clean_text(" ".join(text.split()), limit)


@dataclass(frozen=True)
class ReleaseUnavailable:
    """A release whose info could not be read, and why."""

    tag: str
    reason: str


def release_json(
    version: str, found: ReleaseInfo | ReleaseUnavailable | None, notes: str | None
) -> dict[str, Any]:
    """The ``release`` object of ``check``/``status``/the status API."""
    info = found if isinstance(found, ReleaseInfo) else None
    unavailable = found.reason if isinstance(found, ReleaseUnavailable) else None
    return {
        "version": version,
        "digest": info.digest if info else None,
        "labels": info.shown() if info else {},
        "notes": notes,
        "unavailable": unavailable,
    }


def release_line(
    version: str, found: ReleaseInfo | ReleaseUnavailable | None, notes: str | None
) -> str:
    """One line for a terminal or a log: title, description, source, notes link."""
    parts: list[str] = []
    if isinstance(found, ReleaseInfo):
        for name in ("title", "description", "revision", "url", "source"):
            value = found.get(name)
            if value:
                parts.append(
                    one_line(value)
                    if name in ("title", "description")
                    else f"{name} {one_line(value, 120)}"
                )
    elif isinstance(found, ReleaseUnavailable):
        parts.append(f"release notes unavailable: {one_line(found.reason, 300)}")
    if notes:
        parts.append(f"notes {notes}")
    return f"release {version}: " + ("; ".join(parts) or "says nothing about itself")
