"""The guarded protocol writes a response's head and body in one write when the body follows at once."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from switchman._limits import ServerLimits
from switchman.gateway import guarded_protocol

REQUEST = b"GET /x HTTP/1.1\r\nhost: test\r\n\r\n"


class RecordingTransport(asyncio.Transport):
    """Stands in for the socket: keeps every write (the number of writes is what is under test)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def app_pausing(turns: int) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        for _ in range(turns):
            await asyncio.sleep(0)  # the event loop turns between head and body
        await send({"type": "http.response.body", "body": b"hello"})

    return app


async def serve_one(app: Any) -> list[bytes]:
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    config.load()
    protocol = guarded_protocol(ServerLimits())(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(REQUEST)
    for _ in range(20):
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport.writes


def test_head_and_body_sent_together_go_out_in_one_write() -> None:
    writes = asyncio.run(serve_one(app_pausing(0)))
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n\r\nhello")


def test_a_head_whose_body_waits_goes_out_alone_at_the_next_turn() -> None:
    writes = asyncio.run(serve_one(app_pausing(3)))
    assert len(writes) == 2
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n\r\n")
    assert writes[1] == b"hello"


def test_a_streams_pieces_written_in_one_turn_go_out_together() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for word in (b"one", b"two"):
            await send({"type": "http.response.body", "body": word, "more_body": True})
        await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"three", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    writes = asyncio.run(serve_one(app))
    assert len(writes) == 2
    assert b"transfer-encoding: chunked" in writes[0] and writes[0].endswith(b"\r\n\r\n3\r\none\r\n3\r\ntwo\r\n")
    assert writes[1] == b"5\r\nthree\r\n0\r\n\r\n"


async def serve_stream_then(act: str) -> tuple[list[bytes], RecordingTransport]:
    """A stream whose last piece is written in the same turn as the protocol acts on its own."""
    holder: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"last", "more_body": False})
        if act == "shutdown":
            holder["protocol"].shutdown()  # a graceful shutdown reaching this connection now
        else:
            holder["protocol"].data_received(b"NOT-HTTP\r\n\r\n")  # a malformed pipelined request: 400

    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    config.load()
    protocol = guarded_protocol(ServerLimits())(config=config, server_state=ServerState(), app_state={})
    holder["protocol"] = protocol
    transport = RecordingTransport()
    transport.can_write_eof = lambda: False  # type: ignore[method-assign]
    protocol.connection_made(transport)
    protocol.data_received(REQUEST)
    for _ in range(20):
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport.writes, transport


def test_a_graceful_shutdown_sends_a_streams_held_tail_before_closing() -> None:
    writes, transport = asyncio.run(serve_stream_then("shutdown"))
    assert transport.closed
    assert b"".join(writes).endswith(b"4\r\nlast\r\n0\r\n\r\n")


def test_an_error_for_the_next_request_follows_the_previous_answers_tail() -> None:
    writes, _ = asyncio.run(serve_stream_then("refuse"))
    sent = b"".join(writes)
    error_at = sent.find(b"HTTP/1.1 400")
    assert error_at > 0, sent
    assert sent[:error_at].endswith(b"4\r\nlast\r\n0\r\n\r\n")
