"""A deadline for one upstream call: `asyncio.timeout`'s behaviour at half its cost on the event loop.

    with Deadline(total_s):
        response = await pool.send(...)

On expiry the task is cancelled and the block raises `TimeoutError` (chained from the
`CancelledError`), exactly as `asyncio.timeout` does; a cancellation from elsewhere (the client
left) stays a `CancelledError`, also when it races with the deadline (the task's `cancelling()`
count decides, as there). What it saves: `asyncio.timeout`'s awaited `__aenter__`/`__aexit__`
coroutines, its state enum and `reschedule` (the upstream call wrapper enters one per call).
"""

from __future__ import annotations

from asyncio import CancelledError, Handle, current_task, get_running_loop
from types import TracebackType

__all__ = ["Deadline"]


class Deadline:
    """`with Deadline(seconds):` (inside a task) raises TimeoutError when the block runs past `seconds`."""

    __slots__ = ("_cancelling", "_expired", "_handle", "_seconds", "_task")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._expired = False
        self._handle: Handle | None = None

    def __enter__(self) -> Deadline:
        if self._handle is not None or self._expired:  # as asyncio.timeout (a kept `_expired`, a second timer
            raise RuntimeError("Deadline has already been entered")  # would misreport the next cancellation)
        loop = get_running_loop()
        task = current_task(loop)
        if task is None:
            raise RuntimeError("Deadline should be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        if self._seconds <= 0:  # already past: at once, as asyncio.timeout (call_soon, not the timer heap)
            self._handle = loop.call_soon(self._expire)
        else:
            self._handle = loop.call_at(loop.time() + self._seconds, self._expire)
        return self

    def _expire(self) -> None:
        self._handle = None
        self._task.cancel()
        self._expired = True

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._expired and self._task.uncancel() <= self._cancelling and kind is CancelledError:
            raise TimeoutError from exc
