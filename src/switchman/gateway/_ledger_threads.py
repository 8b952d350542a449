"""The worker threads that blocking ledger-database calls made for a request run in (feedback, dashboard pages).

They get a few tokens of their own instead of anyio's default limiter, whose 40 threads also parse and route
large chat requests: a database that hangs instead of refusing holds each such call until its timeout, and a
burst of feedback (or of dashboard reloads) during the hang must not make the chat path wait for a thread.
"""

from __future__ import annotations

import asyncio
import weakref

import anyio

__all__ = ["LEDGER_THREADS", "ledger_limiter"]

#: Ledger calls at once per event loop; more wait for a token (within their own timeout), never for the chat path's.
LEDGER_THREADS = 8

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


def ledger_limiter() -> anyio.CapacityLimiter:
    """This event loop's limiter for threads blocked on the ledger database (one per loop: a limiter is bound to one)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(LEDGER_THREADS)
    return limiter
