"""Closing an opened stream: its upstream released whatever state its events are in, also with a cancellation pending.

The close skips anyio's shield when nothing in it can suspend (the events ended, a response that
closes at once); the outcome is the same as with the shield.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from switchman.gateway._stream import OpenedStream


class _Response:
    def __init__(self, *, at_once: bool) -> None:
        self.closes_at_once = at_once
        self.closed = False

    async def aclose(self) -> None:
        if not self.closes_at_once:
            await asyncio.sleep(0)  # a close that suspends
        self.closed = True


async def _events(finished: list[bool]) -> AsyncGenerator[list[bytes], None]:
    try:
        yield [b"data: 1"]
        yield [b"data: 2"]
    finally:
        finished.append(True)


async def _close(seen: list[object], *, drained: bool, at_once: bool, cancelled: bool) -> None:
    finished: list[bool] = []
    events = _events(finished)
    await events.__anext__()
    if drained:
        async for _ in events:
            pass
    response = _Response(at_once=at_once)
    opened = OpenedStream(None, response, events, None, [], 0.0, 0.0)  # type: ignore[arg-type]
    task = asyncio.current_task()
    assert task is not None
    if cancelled:
        task.cancel()  # the client left just now
    try:
        await opened.aclose()
    except asyncio.CancelledError:
        seen[:] = [response.closed, bool(finished), "cancelled in the close"]
        raise
    seen[:] = [response.closed, bool(finished), "closed"]


@pytest.mark.parametrize(("drained", "at_once", "cancelled", "expected"), [
    (True, True, False, [True, True, "closed", "done"]),
    (True, True, True, [True, True, "closed", "cancelled"]),  # nothing suspends: the task ends cancelled after
    (False, True, False, [True, True, "closed", "done"]),
    (True, False, False, [True, True, "closed", "done"]),
    (True, False, True, [False, True, "cancelled in the close", "cancelled"]),
])
def test_closing_an_opened_stream(drained: bool, at_once: bool, cancelled: bool, expected: list[object]) -> None:
    seen: list[object] = []

    async def go() -> None:
        task = asyncio.ensure_future(_close(seen, drained=drained, at_once=at_once, cancelled=cancelled))
        try:
            await task
            seen.append("done")
        except asyncio.CancelledError:
            seen.append("cancelled")

    asyncio.run(go())
    assert seen == expected
