"""One log line per request: method, path, status, model, milliseconds, request id.

    INFO:     POST /v1/chat/completions 200 model=gpt-4o-mini 412ms id=9f1c0e...

Written to the `switchman.access` logger when the response has been sent in full (a stream's time
is the whole stream). Off unless that logger is enabled for INFO (`switchman serve` enables it;
`--no-access-log` does not), and then the middleware adds nothing but one check per request. The
ledger remains the record; this line is for the person watching the terminal.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ACCESS_LOGGER", "AccessLogMiddleware"]

#: The logger access lines go to.
ACCESS_LOGGER = "switchman.access"
logger = logging.getLogger(ACCESS_LOGGER)


class AccessLogMiddleware:
    """Logs each HTTP request once its response is complete (or has failed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # until a response starts: an error that escapes becomes the server's 500
        model = "-"
        request_id = "-"

        async def send_and_note(message: Message) -> None:
            nonlocal status, model, request_id
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"x-switchman-model":
                        model = value.decode("latin-1")
                    elif name == b"x-switchman-request-id":
                        request_id = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if request_id == "-":
                request_id = scope.get("state", {}).get("request_id") or "-"
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            logger.info("%s %s %d model=%s %.0fms id=%s", scope["method"], _printable(scope["path"]), status, model,
                        elapsed_ms, request_id)


def _printable(path: str) -> str:
    """The path as one bounded line (a client's %0A must not forge a second log line)."""
    if not path.isprintable():
        path = path.encode("unicode_escape").decode("ascii")
    return path if len(path) <= 200 else path[:200] + "..."
