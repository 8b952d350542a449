"""One log line per request: method, path, status, model, milliseconds, request id.

    INFO:     POST /v1/chat/completions 200 model=gpt-4o-mini 412ms id=9f1c0e...

Written to the `switchman.access` logger when the response has been sent in full (a stream's time
is the whole stream). Off unless that logger is enabled for INFO (`switchman serve` enables it;
`--no-access-log` does not). The ledger remains the record; this line is for the person watching
the terminal.
"""

from __future__ import annotations

import logging

__all__ = ["ACCESS_LOGGER", "access_logger", "log_access"]

#: The logger access lines go to.
ACCESS_LOGGER = "switchman.access"
access_logger = logging.getLogger(ACCESS_LOGGER)


def log_access(method: str, path: str, status: int, model: str, elapsed_ms: float, request_id: str) -> None:
    """Write one access line."""
    access_logger.info("%s %s %d model=%s %.0fms id=%s", method, _printable(path), status, model, elapsed_ms,
                       request_id)


def _printable(path: str) -> str:
    """The path as one bounded line (a client's %0A must not forge a second log line)."""
    if not path.isprintable():
        path = path.encode("unicode_escape").decode("ascii")
    return path if len(path) <= 200 else path[:200] + "..."
