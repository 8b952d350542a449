"""The worker threads that blocking ledger-database calls made for a request run in (feedback, dashboard pages).

They get a few tokens of their own instead of anyio's default limiter, whose 40 threads also parse and route
large chat requests: a database that hangs instead of refusing holds each such call until its timeout, and a
burst of feedback (or of dashboard reloads) during the hang must not make the chat path wait for a thread.

A token is held until the thread's work has actually ended, not until its caller stopped waiting: nothing can
interrupt a thread blocked on a hung connection, so a token given back at the caller's timeout let each timeout
start another blocked thread (some 130 of them in a hang). Now at most `LEDGER_THREADS` block; calls beyond wait
for a token within their own timeout and are answered 503.

`ledger_call` is what a handler uses: the call bounded by its timeout, one error (`LedgerTimeoutError`) when it ran out.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from .._exceptions import LedgerTimeoutError

__all__ = ["LEDGER_THREADS", "LedgerTimeoutError", "ledger_call", "ledger_limiter", "run_in_ledger_thread"]

#: Ledger calls at once per event loop; more wait for a token (within their own timeout), never for the chat path's.
LEDGER_THREADS = 8

_T = TypeVar("_T")

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()
#: The threads' own limiter, only for anyio's bookkeeping: `ledger_limiter`'s tokens already bound them.
_passes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


def _per_loop(table: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter],
              tokens: int) -> anyio.CapacityLimiter:
    loop = asyncio.get_running_loop()
    limiter = table.get(loop)
    if limiter is None:
        limiter = table[loop] = anyio.CapacityLimiter(tokens)
    return limiter


def ledger_limiter() -> anyio.CapacityLimiter:
    """This event loop's limiter for threads blocked on the ledger database (one per loop: a limiter is bound to one)."""
    return _per_loop(_limiters, LEDGER_THREADS)


class _Dropped(Exception):
    """A call whose caller stopped waiting before a thread took it up: not run."""


class _Token:
    """One call's token: given back once, by the thread when its work ends, or by the caller if it never ran."""

    def __init__(self, limiter: anyio.CapacityLimiter, loop: asyncio.AbstractEventLoop) -> None:
        self._limiter = limiter
        self._loop = loop
        self._lock = threading.Lock()
        self._state = "waiting"  # -> running -> done, or waiting -> dropped

    def start(self) -> bool:
        """In the thread: whether to run (not when the caller has dropped the call already)."""
        with self._lock:
            if self._state != "waiting":
                return False
            self._state = "running"
            return True

    def finish(self) -> None:
        """In the thread, once the work has ended: the token back, on the loop (a limiter is not thread-safe)."""
        with self._lock:
            self._state = "done"
        try:
            self._loop.call_soon_threadsafe(self._release)
        except RuntimeError:  # the loop has closed: no one is left to wait for the token
            pass

    def drop(self) -> None:
        """On the loop, when the caller stops waiting: the token back now if the thread never started the work."""
        with self._lock:
            if self._state != "waiting":
                return
            self._state = "dropped"
        self._release()

    def _release(self) -> None:
        self._limiter.release_on_behalf_of(self)


async def run_in_ledger_thread(work: Callable[[], _T]) -> _T:
    """`work()` in a worker thread holding one of `ledger_limiter`'s tokens until it ends (see the module's doc).

    Cancel it (e.g. with `anyio.fail_after`) to stop waiting: the thread, if blocked, keeps its token.
    """
    limiter = ledger_limiter()
    token = _Token(limiter, asyncio.get_running_loop())
    await limiter.acquire_on_behalf_of(token)

    def run() -> _T:
        if not token.start():
            raise _Dropped  # the caller left before this thread got to it (and gave the token back)
        try:
            return work()
        finally:
            token.finish()

    try:
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True, limiter=_per_loop(_passes, 1024))
    finally:
        token.drop()


async def ledger_call(work: Callable[[], _T], timeout_s: float) -> _T:
    """`work()` on a ledger thread (`run_in_ledger_thread`), waited for at most `timeout_s` seconds.

    Raises LedgerTimeoutError when the time ran out (the thread, if blocked, is left holding its token); an error of
    `work` itself, a TimeoutError of its own included, is raised as it is.
    """
    with anyio.move_on_after(timeout_s):
        return await run_in_ledger_thread(work)
    raise LedgerTimeoutError(f"the ledger did not answer within {timeout_s:g} s")
