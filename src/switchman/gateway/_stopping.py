"""uvicorn's server, whose force quit (a second Ctrl-C) still records what was running and closes the gateway.

On a force quit uvicorn neither cancels the requests still running nor runs the app's lifespan shutdown: those
requests were not reliably recorded (their rows raced the process exit), with tracebacks, and the gateway was never
closed, so the ledger's queued rows were neither written nor spilled. A force quit should stop the wait for open
connections, not the bookkeeping: here the requests still running are cancelled as when the graceful shutdown's
time runs out (each records its row), then the lifespan shutdown closes the gateway (its ledger flush bounded by
`server.ledger_close_timeout_s`). That close is bounded as a whole (a Redis or a tracing exporter that hangs does
not hold the exit), and a third Ctrl-C exits at once, closing nothing.

`CancelledByShutdown` turns uvicorn's "Exception in ASGI application" traceback for each request a `GatewayServer`
shutdown cancelled (forced, or past `timeout_graceful_shutdown`) into one line: the cancellation is the shutdown's
doing, not an error (an API request's ledger row says so). Any other record, or one outside a shutdown, is left
alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from types import FrameType

import uvicorn

__all__ = ["CancelledByShutdown", "GatewayServer", "shutting_down"]

#: How long the cancelled requests get to record their rows before the gateway closes.
_CANCELLED_GRACE_S = 5.0
#: What the gateway's close gets on a force quit beyond the ledger's own bound (Redis, the recorder, tracing).
_CLOSE_MARGIN_S = 5.0

logger = logging.getLogger("switchman.gateway")

#: Set while this process's `GatewayServer` shuts down: a request cancelled then was cancelled by the shutdown.
#: Module state because logging's configuration builds the filter that reads it, not the server.
shutting_down = threading.Event()


class GatewayServer(uvicorn.Server):
    """`uvicorn.Server` that, on a forced shutdown, cancels the requests still running and closes the app.

    `switchman serve` with one worker (the default) runs it; with `--workers N` uvicorn's supervisor starts its own
    `uvicorn.Server` in each worker (it takes no server class), so there a force quit is uvicorn's.
    """

    def __init__(self, config: uvicorn.Config, *, close_timeout_s: float = 10.0) -> None:
        """`close_timeout_s`: the ledger's close bound (`server.ledger_close_timeout_s`); a forced close gets that
        plus a margin, then the process goes on to exit whatever is still closing."""
        super().__init__(config)
        self.close_timeout_s = close_timeout_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGINT and self.force_exit:  # a third Ctrl-C: the forced close is taking too long
            os.write(2, b"third Ctrl-C: exiting now, without closing the gateway (queued ledger rows are lost)\n")
            os._exit(128 + signal.SIGINT)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        shutting_down.set()
        try:
            await self._shutdown(sockets)
        finally:
            shutting_down.clear()

    async def _shutdown(self, sockets: list[socket.socket] | None) -> None:
        await super().shutdown(sockets)
        if not self.force_exit:
            return
        running = [task for task in self.server_state.tasks if not task.done()]
        for task in running:
            task.cancel(msg="Task cancelled, the shutdown was forced")
        if running:
            await asyncio.wait(running, timeout=_CANCELLED_GRACE_S)
        done = getattr(self.lifespan, "shutdown_event", None)  # uvicorn's LifespanOn sets it once shut down
        if done is None or done.is_set():
            return
        bound = self.close_timeout_s + _CLOSE_MARGIN_S
        try:
            async with asyncio.timeout(bound):
                await self.lifespan.shutdown()
        except TimeoutError:
            logger.error("the gateway did not close within %.0f s of the forced shutdown; exiting without it", bound)


class CancelledByShutdown(logging.Filter):
    """On uvicorn's error logger: during a shutdown, "Exception in ASGI application" for a CancelledError becomes
    one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncio.CancelledError) and shutting_down.is_set() \
                and str(record.msg).startswith("Exception in ASGI application"):
            record.msg, record.args, record.exc_info, record.exc_text = (
                "a request still running was cancelled by the shutdown (an API request's ledger row says so)",
                None, None, None)
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True
