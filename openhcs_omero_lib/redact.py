"""Keeping passwords and session keys out of every log line.

omero-py logs a failed server call with its arguments and the call's context, which
holds the session key (``omero.session.uuid``), and a refused login can quote what
was refused. The command and the scripts log through handlers that mask every
secret registered here with ``***`` before anything is written, tracebacks included.
"""

from __future__ import annotations

import logging
import threading

_SECRETS: set[str] = set()
_LOCK = threading.Lock()
MASK = "***"


def add_secret(value: str | None) -> None:
    """Mask ``value`` from now on (values of fewer than 6 characters are not
    secrets worth the false hits)."""
    if value and len(value) >= 6:
        with _LOCK:
            _SECRETS.add(value)


def redact(text: str) -> str:
    with _LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Renders a record's message and traceback now, masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def configure_logging(level: int = logging.ERROR, fmt: str = "openhcs-omero: %(name)s: %(message)s",
                      own_process: bool = False) -> None:
    """Log to stderr at ``level`` (omero-py reports each failed call as a warning
    with its traceback; the command and scripts report failures in one line of
    their own), every handler masking secrets. Logging set up before is kept unless
    this is ``own_process`` (a script: omero-py's import sets up warnings to stderr)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=fmt)
    elif own_process:
        root.setLevel(level)
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
