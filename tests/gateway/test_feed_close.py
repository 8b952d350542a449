"""A streamed answer read in process (`StreamFeed`): its reader is released even when closing the stream fails."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

import anyio
from anyio.from_thread import start_blocking_portal

from switchman.gateway import Scrubber
from switchman.gateway._feed import StreamFeed


class _Source:
    """A stream that relays one chunk and then fails to close (what a broken ledger hand-off would do)."""

    request_id, model, decision, error, usage, cost_usd = "r1", "m", None, None, None, None

    def __init__(self) -> None:
        self.closed_with: bool | None = None

    async def relay(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        await send(b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n')
        await anyio.sleep_forever()  # the reader stops before the upstream ends

    async def aclose(self, *, disconnected: bool = False) -> None:
        self.closed_with = disconnected
        raise RuntimeError("closing failed")


def test_a_stream_whose_close_fails_still_releases_its_reader() -> None:
    source = _Source()
    with start_blocking_portal() as portal:
        async def made() -> StreamFeed:  # (on the portal's loop, as the in-process client makes it)
            return StreamFeed(source, portal, scrub=Scrubber())  # type: ignore[arg-type]

        feed = portal.call(made)
        running = portal.start_task_soon(feed.run)
        assert feed.next_chunks() == [{"id": "c1", "choices": [{"index": 0, "delta": {"content": "hi"}}]}]
        closer = threading.Thread(target=feed.close, daemon=True)
        closer.start()
        closer.join(5)
        assert not closer.is_alive()  # close() returned: the reader is not left waiting for a record
        assert source.closed_with is True  # closed as a disconnect (the reader left mid-stream)
        assert feed.next_chunks() is None  # and a later read ends instead of hanging
        assert isinstance(running.exception(timeout=5), RuntimeError)  # the failure itself is not hidden
