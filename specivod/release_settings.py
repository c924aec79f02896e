"""Configuration models for release notes and releases held for a person (``policy.*``).

Rule: a notes template and an attention pattern are checked when the configuration loads, so a
typo stops specivod at start (exit 78, naming the key) instead of at the first release.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from specivod.domain.releases import notes_template_problem


class AttentionLabel(BaseModel):
    """A label (or annotation) the publisher sets on a release that needs a person."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Label or annotation key, e.g. com.specivo.notice.")
    value: str = Field(description="The value that marks the release, e.g. 'manual-steps'.")


def valid_notes_template(value: str | None) -> str | None:
    if value is not None:
        problem = notes_template_problem(value)
        if problem is not None:
            raise ValueError(problem)
    return value


def valid_pattern(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {error}") from None
    return value
