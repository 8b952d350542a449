"""uvicorn's server, whose force quit (a second Ctrl-C) still records what was running and closes the gateway.

On a force quit uvicorn neither cancels the requests still running nor runs the app's lifespan shutdown: those
requests were never recorded (their tasks died with the event loop, each printing a traceback), and the gateway
was never closed, so the ledger's queued rows were neither written nor spilled. A force quit should stop the
wait for open connections, not the bookkeeping: here the requests still running are cancelled as when the
graceful shutdown's time runs out (each records its row), then the lifespan shutdown closes the gateway (its
ledger flush bounded by `server.ledger_close_timeout_s`). `CancelledByShutdown` turns uvicorn's traceback for
each request a shutdown cancelled (forced, or past `timeout_graceful_shutdown`) into one line: the cancellation is
the shutdown's doing, not an error, and the request's ledger row says so.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn

__all__ = ["CancelledByShutdown", "GatewayServer"]

#: How long the cancelled requests get to record their rows before the gateway closes.
_CANCELLED_GRACE_S = 5.0


class GatewayServer(uvicorn.Server):
    """`uvicorn.Server` that, on a forced shutdown, cancels the requests still running and closes the app.

    `switchman serve` with one worker (the default) runs it; with `--workers N` uvicorn's supervisor starts its own
    `uvicorn.Server` in each worker (it takes no server class), so there a force quit is uvicorn's.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        if not self.force_exit:
            return
        running = [task for task in self.server_state.tasks if not task.done()]
        for task in running:
            task.cancel(msg="Task cancelled, the shutdown was forced")
        if running:
            await asyncio.wait(running, timeout=_CANCELLED_GRACE_S)
        done = getattr(self.lifespan, "shutdown_event", None)  # uvicorn's LifespanOn sets it once shut down
        if done is not None and not done.is_set():
            await self.lifespan.shutdown()


class CancelledByShutdown(logging.Filter):
    """On uvicorn's error logger: "Exception in ASGI application" for a CancelledError becomes one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncio.CancelledError):
            record.msg, record.args, record.exc_info, record.exc_text = (
                "a request still running was cancelled by the shutdown (its ledger row says so)", None, None, None)
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True
