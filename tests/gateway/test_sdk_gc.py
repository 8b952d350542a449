"""A Router its caller drops without closing is closed once it is garbage-collected: its loop thread ends and its
ledger rows are written then, not only at the interpreter's exit. The close runs on the SDK's reaper thread, never
where the collection happened (the router's own loop thread, where closing would wait for ever)."""

from __future__ import annotations

import gc
import queue
import threading
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from switchman import Router
from switchman.gateway import Scrubber, _reaper
from switchman.ledger import Ledger
from switchman.testing import FakeUpstream

from .conftest import ANTHROPIC_KEY, OPENAI_KEY, config_data


@pytest.fixture
def url(upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FAKE_OPENAI_KEY", OPENAI_KEY)
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", ANTHROPIC_KEY)
    upstream.clear()
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


def _rows(url: str) -> list[str]:
    ledger = Ledger.from_url(url)
    try:
        return [rec.request_id for rec in ledger.records()]
    finally:
        ledger.close_sync()


@pytest.mark.parametrize("collected_on", ["caller", "loop"])
def test_a_dropped_router_is_closed_when_collected_with_its_rows_written(
        upstream: FakeUpstream, url: str, collected_on: str, monkeypatch: pytest.MonkeyPatch) -> None:
    finalized_on: list[threading.Thread] = []
    hand_over = _reaper._hand_over

    def spied(runtime: Any) -> None:
        finalized_on.append(threading.current_thread())
        hand_over(runtime)

    monkeypatch.setattr(_reaper, "_hand_over", spied)
    router = Router.from_dict(config_data(upstream, url))
    ids = [router.chat("hello", model="cheap").request_id for _ in range(3)]
    client = router._inprocess
    assert client is not None
    loop, portal = client._runtime.loop_thread, client._portal
    dropped = weakref.ref(router)
    if collected_on == "loop":  # freed by the cyclic collector, run on the router's own loop thread
        holder: list[object] = [router]
        holder.append(holder)  # a cycle the router is not part of: its close is not the at-exit one
        del router, client
        gc.disable()  # (no automatic collection on this thread in between)
        try:
            del holder
            assert dropped() is not None and not finalized_on

            async def collect() -> None:
                gc.collect()

            portal.call(collect)
        finally:
            gc.enable()
        assert finalized_on == [loop]
    else:
        del router, client
        gc.collect()
        assert finalized_on == [threading.current_thread()]
    assert dropped() is None  # nothing the SDK keeps (its close at exit) holds the router alive
    _reaper.drain_reaper()  # the closes handed over so far have ended
    assert not loop.is_alive()
    assert sorted(_rows(url)) == sorted(ids)


def test_a_closed_router_is_not_closed_again_when_collected(upstream: FakeUpstream, url: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    router = Router.from_dict(config_data(upstream, url))
    request_id = router.chat("hello", model="cheap").request_id
    router.close()
    del router
    gc.collect()
    _reaper.drain_reaper()
    assert _rows(url) == [request_id] and "could not close" not in caplog.text


def test_a_stream_read_after_its_router_was_dropped_keeps_it(upstream: FakeUpstream, url: str) -> None:
    """`Router.from_dict(...).chat(..., stream=True)`: the stream holds its router; read whole, then dropped, both
    are collected and the row written."""
    stream = Router.from_dict(config_data(upstream, url)).chat("hello", model="cheap", stream=True)
    gc.collect()
    _reaper.drain_reaper()  # a router the stream did not hold would be closed by now
    chunks = list(stream)
    assert chunks and all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    request_id = stream.request_id
    del stream
    gc.collect()
    _reaper.drain_reaper()
    assert _rows(url) == [request_id]


class _Closing:
    """Stands for a runtime handed to the reaper: records its close, and raises from it if told to."""

    def __init__(self, raised: BaseException | None = None) -> None:
        self.raised, self.closed = raised, False
        self.dispatcher = SimpleNamespace(scrub=Scrubber())  # (the reaper logs a failed close through it)

    def close(self, timeout: float) -> None:
        self.closed = True
        if self.raised is not None:
            raise self.raised


def test_a_close_raising_even_system_exit_does_not_end_the_reaper(upstream: FakeUpstream, url: str) -> None:
    with Router.from_dict(config_data(upstream, url)) as router:
        router.chat("hello", model="cheap")  # (the reaper runs from here on)
    failing, after = _Closing(SystemExit(3)), _Closing()
    _reaper._hand_over(failing)  # type: ignore[arg-type]
    _reaper._hand_over(after)  # type: ignore[arg-type]
    _reaper.drain_reaper()
    assert failing.closed and after.closed
    assert _reaper._thread is not None and _reaper._thread.is_alive()


def test_draining_a_reaper_that_died_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    """At exit `drain_reaper` waits for the reaper; one that died meanwhile must not make the exit wait for ever."""
    stop = threading.Event()
    dying = threading.Thread(target=stop.wait, daemon=True)  # a reaper that never answers, then ends
    dying.start()
    monkeypatch.setattr(_reaper, "_thread", dying)
    monkeypatch.setattr(_reaper, "_handed", queue.SimpleQueue())  # (read by no one)
    drainer = threading.Thread(target=_reaper.drain_reaper, daemon=True)
    drainer.start()
    stop.set()
    drainer.join(60.0)  # (returns within a second of the reaper's end; for ever before)
    assert not drainer.is_alive()


def test_a_close_that_fails_is_logged_without_the_key_it_names(upstream: FakeUpstream, url: str,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """The reaper logs a failed close through the runtime's scrubber: an upstream's error may echo its key."""
    with Router.from_dict(config_data(upstream, url)) as router:
        router.chat("hello", model="cheap")
        assert router._inprocess is not None
        runtime = router._inprocess._runtime

        def failing(timeout: float) -> None:
            raise RuntimeError(f"upstream said: bad key {OPENAI_KEY}")

        with monkeypatch.context() as patch, caplog.at_level("ERROR", logger=_reaper.logger.name):
            patch.setattr(runtime, "close", failing)
            _reaper._hand_over(runtime)
            _reaper.drain_reaper()
        assert "could not close the in-process client" in caplog.text and "bad key" in caplog.text
        assert OPENAI_KEY not in caplog.text
