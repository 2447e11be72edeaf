"""Errors users see: plain, generic words and a short reference; the detail goes to the log.

Exception text can name buckets, endpoints, IAM actions, file paths or SQL. None of it may reach
a banner, an alert or a public endpoint. :func:`report` logs the detail (with its traceback)
under a fresh reference id, passed as ``extra={"ref": ...}`` so the JSON log format carries it
as a field; :func:`user_message` is the one sentence shown, naming that reference, so support
can find the log entry from a planner's screenshot.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any


class UserFacingError(Exception):
    """An error whose message is written for users (no internal detail): shown as it is."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


REF_CHARS = 8  # 32 bits of hex: unique enough to find one log entry in a day's logs


def new_ref() -> str:
    """A short random reference, e.g. 'e3b0c442'."""
    return secrets.token_hex(REF_CHARS // 2)


def report(
    logger: logging.Logger,
    what: str,
    exc: BaseException | None = None,
    *,
    level: int = logging.ERROR,
    **extra: Any,
) -> str:
    """Log ``what`` (and ``exc`` with its traceback) under a new reference; return the reference."""
    ref = new_ref()
    logger.log(
        level,
        "%s [ref %s]%s",
        what,
        ref,
        f": {type(exc).__name__}: {exc}" if exc is not None else "",
        exc_info=exc if exc is not None and level >= logging.ERROR else None,
        extra={"ref": ref, **extra},
    )
    return ref


def user_message(what: str, ref: str) -> str:
    """'The data store could not be reached (reference e3b0c442).' — no detail, ever."""
    return f"{what} (reference {ref})."
