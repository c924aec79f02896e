"""Secrets never leave the process: every text bound for an error message, the journal, a log line
or ``config show`` goes through ``redact`` (or ``redact_argv`` for a command) first.

Masked, wherever they appear:

- the password in a URL's userinfo: ``postgresql://user:MASK@host/db``;
- the value of an assignment or option whose name says it is secret (holds ``password``,
  ``passwd``, ``token`` or ``secret`` in any case, and is not a ``..._file``): ``PGPASSWORD=X``,
  ``password=X`` in a libpq connection string, ``--password=X``, ``--password X`` (the value may
  be quoted); prose such as "password authentication failed" is left alone;
- ``-pX`` as one word (the MySQL-style password option; a ``-p5432`` port is masked too);
- every value registered with ``register``: the secrets read from files at load time, and the
  secrets found in configured commands and URLs (so a tool that echoes one elsewhere is caught).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

MASK = "********"
MIN_REGISTERED = 4
"""Shorter registered values would mask ordinary words; the patterns above still catch them."""

_SENSITIVE_NAME = r"[\w.-]*(?:password|passwd|token|secret)(?![\w.-]*file)[\w.-]*"
_QUOTED_OR_WORD = r"""'[^']*'|"[^"]*"|[^\s'"]+"""

_URL_PASSWORD = re.compile(r"(?P<keep>[A-Za-z][\w+.-]*://[^\s:/@]*:)(?P<secret>[^\s/?#]*)(?=@)")
_ASSIGNED = re.compile(
    rf"(?<![\w.-])(?P<keep>-{{0,2}}{_SENSITIVE_NAME}[ \t]*=[ \t]*)(?P<secret>{_QUOTED_OR_WORD})",
    re.IGNORECASE,
)
_OPTION = re.compile(
    rf"(?<!\S)(?P<keep>-{{1,2}}{_SENSITIVE_NAME}[ \t]+)(?P<secret>{_QUOTED_OR_WORD})", re.IGNORECASE
)
_SHORT_P = re.compile(r"(?P<keep>(?<!\S)-p)(?P<secret>[^\s=]+)")
_PATTERNS = (_URL_PASSWORD, _ASSIGNED, _OPTION, _SHORT_P)
_REGISTRABLE = (_URL_PASSWORD, _ASSIGNED, _OPTION)
"""``-pX`` is masked but not registered: it is as often a port as a password."""

_FLAG_ONLY = re.compile(rf"-{{1,2}}{_SENSITIVE_NAME}", re.IGNORECASE)
_ITEM_ASSIGNED = re.compile(rf"(?P<keep>-{{0,2}}{_SENSITIVE_NAME}=)(?P<secret>.+)", re.I | re.S)

_registered: set[str] = set()


def register(*secrets: str) -> None:
    """Mask these values in every later ``redact`` call (for the life of the process)."""
    for secret in secrets:
        value = secret.strip()
        if len(value) >= MIN_REGISTERED:
            _registered.add(value)


def secrets_in(argv: Sequence[str]) -> list[str]:
    """The secrets ``redact_argv`` would mask in ``argv`` (a command, or a list of URLs), without
    their quotes, for ``register``."""
    found: list[str] = []
    after_flag = False
    for item in argv:
        if after_flag:
            found.append(item)
        elif (match := _ITEM_ASSIGNED.fullmatch(item)) and match.group("secret")[0] not in "'\"":
            found.append(match.group("secret"))
        for pattern in _REGISTRABLE:
            found.extend(match.group("secret") for match in pattern.finditer(item))
        after_flag = bool(_FLAG_ONLY.fullmatch(item))
    return [unquoted for secret in found if (unquoted := _unquote(secret)) and unquoted != MASK]


def redact(text: str) -> str:
    """``text`` with every secret it holds replaced by ``MASK``."""
    for secret in sorted(_registered, key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(_masked, text)
    return text


def redact_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` item by item: an item after a bare secret option (``--password X``) is masked
    whole, an item ``NAME=...`` with a secret name keeps only its name."""
    shown: list[str] = []
    hide_next = False
    for item in argv:
        if hide_next:
            shown.append(MASK)
        elif match := _ITEM_ASSIGNED.fullmatch(item):
            shown.append(match.group("keep") + MASK)
        else:
            shown.append(redact(item))
        hide_next = bool(_FLAG_ONLY.fullmatch(item))
    return shown


class RedactingFilter(logging.Filter):
    """A handler filter that redacts each record's final message (and its traceback text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def _masked(match: re.Match[str]) -> str:
    return match.group("keep") + MASK


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
