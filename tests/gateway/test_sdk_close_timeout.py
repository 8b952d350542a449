"""`Router.close(timeout)` that gives up on calls still running: each caller — sync or async, a call or a stream
being read — gets RouterClosedError saying the router was closed while it ran, never a bare cancellation
(concurrent.futures' CancelledError, or asyncio's, which an async caller would take for its own task's)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from switchman import Reply, Router, RouterClosedError
from switchman.gateway._feed import StreamFeed
from switchman.testing import FakeUpstream

from .conftest import CallThread, sdk_config


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


class _Waiting:
    """Streams whose reader, past its first chunk, waits on an empty buffer for the next (a close cuts it there)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.delivered: set[int] = set()
        self.waiting: set[int] = set()
        self.changed = threading.Condition()
        read = StreamFeed._read

        async def watched(feed: StreamFeed) -> list[dict[str, Any]] | None:
            if id(feed) in self.delivered and feed._receive.statistics().current_buffer_used == 0:
                with self.changed:
                    self.waiting.add(id(feed))
                    self.changed.notify_all()
            chunks = await read(feed)
            self.delivered.add(id(feed))
            return chunks

        monkeypatch.setattr(StreamFeed, "_read", watched)

    def wait_for(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.waiting) >= count, timeout=10)


def test_callers_cut_off_by_close_timeout_get_router_closed_error(
        sdk_router: Router, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    router = sdk_router
    waiting = _Waiting(monkeypatch)
    router.chat("warm up", model="mid")
    upstream.inject("latency", model="cheap", times=None, seconds=4.0)  # answers well after the close gave up
    upstream.inject("slow_stream", model="big", times=None, seconds=4.0)  # one event, then a long pause
    reading: list[str] = []
    callers = {name: CallThread(call) for name, call in _calls(router, reading).items()}
    threads = list(callers.values())
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(upstream.requests_for("cheap")) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert waiting.wait_for(2)  # both readers past their first event, waiting for the next
        with pytest.raises(TimeoutError):
            router.close(timeout=0.5)
        for thread in threads:
            thread.join(10)
    finally:
        upstream.clear()
    outcomes = {name: caller.outcome[0] for name, caller in callers.items() if caller.outcome}
    assert set(outcomes) == {"chat", "achat", "stream", "astream"}, outcomes
    for name, outcome in outcomes.items():
        assert isinstance(outcome, RouterClosedError), (name, repr(outcome))
        assert "closed while this" in str(outcome), (name, str(outcome))
    router.chat("after", model="mid")  # a new call starts the router again
    router.close()


def test_a_reader_cut_off_when_close_stops_the_loop_gets_router_closed_error(
        sdk_router: Router, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Past its calls the close can still be stuck (here: ending a stream whose record never finishes, as with a
    sick ledger); it then stops the loop under it, and the stream's reader gets RouterClosedError too. The stream's
    row is still written: the relay ends (writing it) before the ledger closes."""
    async def stuck(self: StreamFeed) -> None:
        await anyio.sleep_forever()

    monkeypatch.setattr(StreamFeed, "cut", stuck)
    waiting = _Waiting(monkeypatch)
    router = sdk_router
    upstream.inject("slow_stream", model="big", times=None, seconds=4.0)
    reading = threading.Event()

    def read() -> None:
        for _ in router.chat("slow", model="big", stream=True):
            reading.set()

    thread = CallThread(read)
    outcome = thread.outcome
    try:
        thread.start()
        assert reading.wait(10)
        assert waiting.wait_for(1)  # the reader waits for the next event
        with pytest.raises(TimeoutError):
            router.close(timeout=0.3)
        thread.join(10)
    finally:
        upstream.clear()
    assert len(outcome) == 1 and isinstance(outcome[0], RouterClosedError), repr(outcome)
    assert "closed while this stream was read" in str(outcome[0]) and "timeout" in str(outcome[0])
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        rows = db.execute("select model, status from switchman_requests").fetchall()
    assert rows == [("big", "client_disconnected")], rows


@pytest.mark.parametrize("timeout", [0.0, 0.001])
def test_an_idle_router_closes_whatever_the_timeout(sdk_router: Router, tmp_path: Path, timeout: float) -> None:
    """The timeout bounds the wait for calls under way: with none, `close(0)` closes (rows written), no TimeoutError."""
    router = sdk_router
    router.chat("warm up", model="mid")
    router.close(timeout=timeout)
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        assert db.execute("select count(*) from switchman_requests").fetchone() == (1,)


def test_a_call_recorded_as_a_success_keeps_its_answer_when_close_gives_up(
        upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `durability: sync` a call waits, after writing its success row, for the ledger's commit (a sick ledger:
    up to 5 s). A close that gives up on it then must not tell its caller the call failed: it gets its answer."""
    from switchman.gateway._dispatcher import Dispatcher

    data = sdk_config(upstream, tmp_path, monkeypatch)
    data["server"]["durability"] = "sync"
    router = Router.from_dict(data)
    committing, released = threading.Event(), threading.Event()

    async def sick_commit(self: Dispatcher, ticket: object) -> None:
        committing.set()
        while not released.is_set():  # the commit never comes while the close waits
            await anyio.sleep(0.01)

    monkeypatch.setattr(Dispatcher, "committed", sick_commit)
    thread = CallThread(lambda: router.chat("hello", model="cheap"))
    outcome = thread.outcome
    try:
        thread.start()
        assert committing.wait(10)
        with pytest.raises(TimeoutError):
            router.close(timeout=0.2)
        thread.join(10)
    finally:
        released.set()
        router.close()
    assert len(outcome) == 1 and not isinstance(outcome[0], BaseException), repr(outcome)
    reply = thread.result
    assert isinstance(reply, Reply) and reply.model == "cheap", repr(reply)  # the answer itself, not just no error
    assert reply["choices"][0]["message"]["content"] == "Hello from cheap.", reply
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        assert db.execute("select model, status from switchman_requests").fetchall() == [("cheap", "ok")]


def test_close_timeout_does_not_wait_for_a_hung_name_lookup(
        upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call resolving its upstream's host name (getaddrinfo in the loop's default executor, which the loop's
    teardown waits for) when the DNS server does not answer: `close(timeout)` returns (TimeoutError) without
    waiting for the look-up; the loop thread, a daemon, ends once it does."""
    import socket

    data = sdk_config(upstream, tmp_path, monkeypatch)
    for provider in data["providers"].values():
        provider["base_url"] = provider["base_url"].replace("127.0.0.1", "localhost")
    router = Router.from_dict(data)
    resolving, answered = threading.Event(), threading.Event()
    real = socket.getaddrinfo

    def hung(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "localhost":
            resolving.set()
            answered.wait(20)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hung)
    caller = CallThread(lambda: router.chat("hello", model="cheap"))
    closer = CallThread(lambda: router.close(timeout=0.2))
    outcome, closed = caller.outcome, closer.outcome
    try:
        caller.start()
        assert resolving.wait(10)
        closer.start()
        closer.join(10)
        assert not answered.is_set() and not closer.is_alive(), "close waited for the name look-up"
    finally:
        answered.set()
        closer.join(20)
        caller.join(20)
    assert len(closed) == 1 and isinstance(closed[0], TimeoutError), closed
    assert len(outcome) == 1 and isinstance(outcome[0], RouterClosedError), outcome
