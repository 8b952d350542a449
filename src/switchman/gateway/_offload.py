"""The worker threads that parse and decide large requests (bodies over `OFFLOAD_BYTES`, long prompts).

They get a few tokens of their own instead of anyio's default limiter, whose 40 threads the budget refresh, shadow
decisions and config reload share: a burst of large requests must not take every thread those need (nor they the
large requests'). The work is CPU-bound under the GIL, so more threads would not make it faster either.

    decided = await run_offloaded(decide, body, context)
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple, Unpack

import anyio
import anyio.to_thread

from ._ledger_threads import _per_loop

__all__ = ["OFFLOAD_BYTES", "OFFLOAD_THREADS", "run_offloaded"]

#: Request bodies larger than this (bytes) are parsed and decided in a worker thread, whatever their text:
#: counting grows with the messages, parts and tools too (130,000 empty messages held the event loop for ~0.6 s).
OFFLOAD_BYTES = 64 * 1024
#: Large requests parsed or decided at once per event loop; more wait for a token.
OFFLOAD_THREADS = 2

_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


def _offload_limiter() -> anyio.CapacityLimiter:
    """This event loop's limiter for the large-request threads (one per loop: a limiter is bound to one)."""
    return _per_loop(_limiters, OFFLOAD_THREADS)


async def run_offloaded(work: Callable[[Unpack[_Args]], _T], *args: *_Args) -> _T:
    """`work(*args)` in one of the large-request threads (see the module's doc)."""
    return await anyio.to_thread.run_sync(work, *args, limiter=_offload_limiter())
