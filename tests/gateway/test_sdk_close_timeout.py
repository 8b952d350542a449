"""`Router.close(timeout)` that gives up on calls still running: each caller — sync or async, a call or a stream
being read — gets RouterClosedError saying the router was closed while it ran, never a bare cancellation
(concurrent.futures' CancelledError, or asyncio's, which an async caller would take for its own task's)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import anyio
import pytest

from switchman import Router, RouterClosedError
from switchman.testing import FakeUpstream


def _calls(router: Router, reading: list[str]) -> dict[str, Callable[[], object]]:
    """The four ways to be waiting on the router; a stream's reader notes in `reading` that it has its first event."""

    def read(stream: object) -> None:
        for _ in stream:  # type: ignore[attr-defined]
            reading.append("stream")

    async def aread() -> None:
        async for _ in await router.achat("slow", model="big", stream=True):
            reading.append("astream")

    return {
        "chat": lambda: router.chat("slow", model="cheap"),
        "achat": lambda: asyncio.run(router.achat("slow", model="cheap")),
        "stream": lambda: read(router.chat("slow", model="big", stream=True)),
        "astream": lambda: asyncio.run(aread()),
    }


def test_callers_cut_off_by_close_timeout_get_router_closed_error(sdk_router: Router, upstream: FakeUpstream) -> None:
    router = sdk_router
    router.chat("warm up", model="mid")
    upstream.inject("latency", model="cheap", times=None, seconds=4.0)  # answers well after the close gave up
    upstream.inject("slow_stream", model="big", times=None, seconds=4.0)  # one event, then a long pause
    outcomes: dict[str, BaseException | None] = {}
    threads, reading = [], []
    for name, call in _calls(router, reading).items():

        def run(name: str = name, call: Callable[[], object] = call) -> None:
            try:
                call()
                outcomes[name] = None
            except BaseException as exc:  # noqa: BLE001 - what each caller got is the assertion
                outcomes[name] = exc

        threads.append(threading.Thread(target=run, daemon=True))
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while (len(upstream.requests_for("cheap")) < 2 or not {"stream", "astream"} <= set(reading)) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # both readers past their first event, waiting for the next
        with pytest.raises(TimeoutError):
            router.close(timeout=0.5)
        for thread in threads:
            thread.join(10)
    finally:
        upstream.clear()
    assert set(outcomes) == {"chat", "achat", "stream", "astream"}, outcomes
    for name, outcome in outcomes.items():
        assert isinstance(outcome, RouterClosedError), (name, repr(outcome))
        assert "closed while this" in str(outcome), (name, str(outcome))
    router.chat("after", model="mid")  # a new call starts the router again
    router.close()


def test_a_reader_cut_off_when_close_stops_the_loop_gets_router_closed_error(
        sdk_router: Router, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its calls the close can still be stuck (here: ending a stream whose record never finishes, as with a
    sick ledger); it then stops the loop under it, and the stream's reader gets RouterClosedError too."""
    from switchman.gateway._feed import StreamFeed

    async def stuck(self: StreamFeed) -> None:
        await anyio.sleep_forever()

    monkeypatch.setattr(StreamFeed, "cut", stuck)
    router = sdk_router
    upstream.inject("slow_stream", model="big", times=None, seconds=4.0)
    reading = threading.Event()
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            for _ in router.chat("slow", model="big", stream=True):
                reading.set()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - what the reader got is the assertion
            outcome.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    try:
        thread.start()
        assert reading.wait(10)
        time.sleep(0.2)  # the reader waits for the next event
        with pytest.raises(TimeoutError):
            router.close(timeout=0.3)
        thread.join(10)
    finally:
        upstream.clear()
    assert len(outcome) == 1 and isinstance(outcome[0], RouterClosedError), repr(outcome)
    assert "closed while this stream was read" in str(outcome[0]) and "timeout" in str(outcome[0])
