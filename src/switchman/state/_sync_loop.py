"""The background loop of a replica's shared state kept in step with Redis (health, online counts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .._streaks import FailureStreak

__all__ = ["SyncLoop", "sync_every"]

logger = logging.getLogger("switchman.state")


async def sync_every(sync: Callable[[], Awaitable[None]], interval_s: float, stopping: asyncio.Event, what: str) -> None:
    """Run `sync` every `interval_s` until `stopping` is set (woken at once by it, never cancelled mid-call).

    An unexpected error is logged and the loop goes on: a replica must not silently stop sharing. A streak of
    failures is logged once, at its start (with the traceback), and its end as one line (see FailureStreak); a
    different error that starts during a streak is not logged again until the streak ends.
    """
    named = what.replace("%", "%%")
    streak = FailureStreak(logger, f"redis {named} sync failed; trying again in %.2f s", f"redis {what} sync works again")
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await stopping.wait()
        if stopping.is_set():
            return
        try:
            await sync()
        except Exception:  # noqa: BLE001 (logged by the streak) a replica must not silently stop sharing
            streak.failed(interval_s)
        else:
            streak.succeeded()


class SyncLoop:
    """One background `sync_every` task: started once, stopped at its next wake-up, never cancelled mid-call
    (redis-py can sit on a cancelled call), with a last `sync` left to the owner."""

    def __init__(self, sync: Callable[[], Awaitable[None]], interval_s: float, what: str) -> None:
        self._sync, self._interval_s, self._what = sync, interval_s, what
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Start the loop (once; a second call does nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(sync_every(self._sync, self._interval_s, self._stopping, self._what),
                                             name=f"switchman-{self._what.replace(' ', '-')}-sync")

    async def stop(self, grace_s: float) -> None:
        """Ask the loop to stop and wait up to `grace_s` for it (then cancel it)."""
        if self._task is not None:
            self._stopping.set()
            await asyncio.wait([self._task], timeout=grace_s)
            self._task.cancel()
            self._task = None
