"""The background loop of a replica's shared state kept in step with Redis (health, online counts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["sync_every"]

logger = logging.getLogger("switchman.state")


async def sync_every(sync: Callable[[], Awaitable[None]], interval_s: float, stopping: asyncio.Event, what: str) -> None:
    """Run `sync` every `interval_s` until `stopping` is set (woken at once by it, never cancelled mid-call).

    An unexpected error is logged and the loop goes on: a replica must not silently stop sharing.
    """
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await stopping.wait()
        if stopping.is_set():
            return
        try:
            await sync()
        except Exception:
            logger.exception("redis %s sync failed; trying again in %.2f s", what, interval_s)
