"""The SDK's boundary: work run on the in-process client's loop, waited for from the caller's thread or event loop,
and whatever it raises scrubbed on the way out.

Every exception, not only switchman's own: a client library's error (openai's, httpx's, aiohttp's) that escapes
the dispatcher keeps the request it sent and what the upstream echoed (a provider's 401 repeats the key). Its type
is kept (`except openai.APIError` still catches it), its secrets and the loop thread's frames are not. Plain
try/except, not a context manager: contextlib would re-attach the loop's traceback on the way out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal

from .._exceptions import RouterClosedError
from ._errors import scrubbed

__all__ = ["awaited", "called"]

_T = TypeVar("_T")
Scrub = Callable[[str], str]


@contextmanager
def _portal_running() -> Iterator[None]:
    """anyio's RuntimeError for a call on a stopped portal as what it means to the caller: the Router was closed."""
    try:
        yield
    except RuntimeError as exc:
        if isinstance(exc, RouterClosedError) or "portal is not running" not in str(exc):
            raise
        raise RouterClosedError("the router was closed during this call (a new call starts it again)") from None


def called(portal: BlockingPortal, scrub: Scrub, work: Callable[..., Awaitable[_T]], *args: Any) -> _T:
    """`work(*args)` run on the portal's loop and waited for here; what it raises, scrubbed."""
    try:
        with _portal_running():
            return portal.call(work, *args)
    except Exception as exc:  # noqa: BLE001 - re-raised, scrubbed (cancellations and exits pass as they are)
        clean = scrubbed(exc, scrub)
    raise clean from clean.__cause__  # out of the except: inside, Python links the unscrubbed `exc` as its context


async def awaited(portal: BlockingPortal, scrub: Scrub, work: Callable[..., Awaitable[_T]], *args: Any) -> _T:
    """`called`, awaited from the caller's own event loop."""
    with _portal_running():
        future = portal.start_task_soon(work, *args)
    try:
        return await asyncio.wrap_future(future)
    except Exception as exc:  # noqa: BLE001 - as in `called`
        clean = scrubbed(exc, scrub)
    raise clean from clean.__cause__  # as in `called`
