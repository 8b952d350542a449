"""Access lines and request ids: written together a moment later in an event loop, at once outside one."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import select
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchman.gateway import AccessLineHandler
from switchman.gateway._middleware._access_log import FLUSH_DELAY_S, access_logger, log_access
from switchman.gateway._middleware._request_id import new_request_id
from switchman.testing import FakeUpstream


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.handler: AccessLineHandler | None = None

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def stream() -> Iterator[_CountingStream]:
    out = _CountingStream()
    out.handler = handler = AccessLineHandler(out)
    level, propagate = access_logger.level, access_logger.propagate
    access_logger.addHandler(handler)
    access_logger.setLevel(logging.INFO)
    access_logger.propagate = False
    try:
        yield out
    finally:
        access_logger.removeHandler(handler)
        access_logger.setLevel(level)
        access_logger.propagate = propagate
        handler.close()


def test_lines_of_one_moment_go_out_in_one_write(stream: _CountingStream) -> None:
    async def serve() -> str:
        for n in range(3):
            log_access("POST", "/v1/chat/completions", 200, "small", 1.0, f"id{n}")
        held = stream.getvalue()
        await asyncio.sleep(FLUSH_DELAY_S * 3)
        return held

    assert asyncio.run(serve()) == ""
    assert stream.getvalue().splitlines() == [f"POST /v1/chat/completions 200 model=small 1ms id=id{n}" for n in range(3)]
    assert stream.writes == 1


def test_outside_an_event_loop_a_line_is_written_at_once(stream: _CountingStream) -> None:
    log_access("GET", "/health", 200, "-", 0.2, "abc")
    assert stream.getvalue() == "GET /health 200 model=- 0ms id=abc\n"


def test_lines_held_when_the_loop_ends_are_written_by_a_flush(stream: _CountingStream) -> None:
    async def last_request() -> None:
        log_access("POST", "/v1/chat/completions", 200, "small", 1.0, "last")

    asyncio.run(last_request())  # the loop closes before the delayed write
    assert stream.getvalue() == ""
    assert stream.handler is not None
    stream.handler.flush()  # as logging's shutdown does
    assert "id=last" in stream.getvalue()


def test_request_ids_are_random_hex_and_never_repeat() -> None:
    ids = [new_request_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_does_not_reuse_its_parents_ids() -> None:
    new_request_id()  # the parent holds ids cut from its last read
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover  (the child)
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    assert os.read(read, 64).decode() != new_request_id()


@pytest.mark.parametrize("colors", [False, True])
def test_access_lines_look_as_uvicorns_formatter_writes_them(colors: bool) -> None:
    from uvicorn.logging import DefaultFormatter

    from switchman.gateway import AccessLineFormatter

    def record() -> logging.LogRecord:
        return access_logger.makeRecord(access_logger.name, logging.INFO, __file__, 1,
                                        "%s %s %d model=%s %.0fms id=%s",
                                        ("POST", "/v1/chat/completions", 200, "small", 3.2, "abc"), None)

    fmt = "%(levelprefix)s %(message)s"
    ours = AccessLineFormatter(fmt, use_colors=colors).format(record())
    assert ours == DefaultFormatter(fmt, use_colors=colors).format(record())
    assert ours.endswith(":     POST /v1/chat/completions 200 model=small 3ms id=abc")


def test_lines_held_when_the_server_stops_are_written_before_it_has_stopped(
    stream: _CountingStream, tmp_path: Path, upstream: FakeUpstream
) -> None:
    """uvicorn re-raises SIGTERM once its shutdown is done: the process ends there, before a delayed write and
    without logging's flush at exit. The lines of requests cut at the end of the grace period come just before
    the app's lifespan shutdown (and late ones during it), so by its end every line must be on the stream."""
    from switchman._config import parse_config
    from switchman.gateway import Gateway, build_app

    from .conftest import ENV, config_data

    gateway = Gateway.from_config(parse_config(config_data(upstream, f"sqlite:///{tmp_path / 'l.sqlite3'}")), env=ENV)
    app = build_app(gateway)

    async def serve_then_stop() -> tuple[str, str]:
        inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        outbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                           inbox.get, outbox.put))
        await inbox.put({"type": "lifespan.startup"})
        assert (await outbox.get())["type"] == "lifespan.startup.complete"
        log_access("POST", "/v1/chat/completions", 200, "cheap", 30000.0, "cut")  # a stream cut at shutdown
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        at_stop = stream.getvalue()  # what the stream has when uvicorn re-raises SIGTERM
        log_access("POST", "/v1/chat/completions", 200, "cheap", 30001.0, "late")  # a request finishing after it
        after = stream.getvalue()
        await lifespan
        return at_stop, after

    at_stop, after = asyncio.run(serve_then_stop())
    assert "id=cut" in at_stop
    assert "id=late" in after


def test_held_lines_go_out_in_writes_a_pipe_keeps_whole(stream: _CountingStream) -> None:
    """`serve --workers N` share one stdout pipe: a write over PIPE_BUF may be spliced with another worker's
    when the reader lags, which would cut lines in two. Many held lines go out in several writes of whole lines."""
    sizes: list[bytes] = []
    write = stream.write

    def recording(text: str) -> int:
        sizes.append(text.encode())
        return write(text)

    stream.write = recording  # type: ignore[method-assign]

    async def busy_moment() -> None:
        for n in range(400):  # a busy worker's 20 ms
            log_access("POST", "/v1/chat/completions", 200, "small-model-name", 12.0, f"{n:032x}")
        await asyncio.sleep(FLUSH_DELAY_S * 3)

    asyncio.run(busy_moment())
    assert len(stream.getvalue().splitlines()) == 400
    assert sizes and all(len(piece) <= select.PIPE_BUF and piece.endswith(b"\n") for piece in sizes)
    assert len(sizes) < 400 / 10  # still far fewer writes than lines


def test_a_line_the_stream_cannot_encode_does_not_lose_the_others() -> None:
    """On an ascii stdout a client's non-ASCII path must not take the other requests' lines of the moment with it."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii", errors="strict", write_through=True)
    handler = AccessLineHandler(out)
    access_logger.addHandler(handler)
    level, propagate = access_logger.level, access_logger.propagate
    access_logger.setLevel(logging.INFO)
    access_logger.propagate = False

    async def moment() -> None:
        log_access("POST", "/v1/chat/completions", 200, "small", 1.0, "before")
        log_access("POST", "/v1/caf\u00e9", 404, "-", 1.0, "hostile")
        log_access("POST", "/v1/chat/completions", 200, "small", 1.0, "after")
        await asyncio.sleep(FLUSH_DELAY_S * 3)

    try:
        asyncio.run(moment())
    finally:
        access_logger.removeHandler(handler)
        access_logger.setLevel(level)
        access_logger.propagate = propagate
    written = raw.getvalue().decode("ascii")
    assert "id=before" in written and "id=after" in written
    assert "/v1/caf\\xe9 404" in written


@pytest.mark.parametrize("colors", [False, True])
def test_lines_written_straight_to_the_handler_are_the_lines_logging_writes(colors: bool) -> None:
    """As `serve` configures it the line skips the LogRecord; with a filter on the handler it takes logging's way."""
    from switchman.gateway._middleware._access_log import AccessLineFormatter

    out = io.StringIO()
    handler = AccessLineHandler(out)
    handler.setFormatter(AccessLineFormatter(fmt="%(levelprefix)s %(message)s", use_colors=colors))
    level, propagate = access_logger.level, access_logger.propagate
    access_logger.addHandler(handler)
    access_logger.setLevel(logging.INFO)
    access_logger.propagate = False
    lines = [("POST", "/v1/chat/completions", 200, "small", 1.4, "abc"), ("GET", "/v1/caf\u00e9\n", 404, "-", 0.2, "x"),
             ("POST", "/" + "a" * 300, 500, "model-name", 12345.678, "0123456789abcdef")]
    written = []
    try:
        for passes in (False, True):
            if passes:
                handler.addFilter(lambda record: True)  # a filter: records again
            for line in lines:
                log_access(*line)
            handler.write_held()
            written.append(out.getvalue())
            out.seek(0)
            out.truncate()
    finally:
        access_logger.removeHandler(handler)
        access_logger.setLevel(level)
        access_logger.propagate = propagate
        handler.close()
    assert written[0] == written[1]
    assert written[0].count("\n") == 3 and "POST /v1/chat/completions 200 model=small 1ms id=abc\n" in written[0]
    assert ("\x1b[" in written[0]) == colors
