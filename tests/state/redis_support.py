"""Redis for the state tests: links on the machine's shared Redis (started, or counting the scripts they run), and a
misbehaving Redis for the link's tests: a small asyncio server where hiredis parses what the client sends (no
hand-written protocol) and the test says what goes back; shared by the fault and error-reply tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from switchman.state import RedisLink

#: The machine's Redis, shared by every test (each under a key prefix of its own: the `prefix` fixture).
SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"


async def started_link(url: str, prefix: str, *, ping_s: float = 1.0) -> RedisLink:
    """A link (2 s timeouts, a ping every `ping_s`) to the Redis at `url` under `prefix`, started and up."""
    link = RedisLink(url, prefix=prefix, timeout_s=2.0, ping_s=ping_s)
    await link.start()
    assert link.up
    return link


async def counting_link(
    prefix: str, sources: list[str] | None = None,
) -> tuple[RedisLink, list[list[str]]]:
    """A link on the shared Redis under `prefix`, and the keys of every script it runs, in order (their sources
    appended to `sources` when given)."""
    link = RedisLink(SHARED_REDIS_URL, prefix=prefix, timeout_s=2.0)
    await link.check()
    assert link.up
    scripts: list[list[str]] = []
    real = link.eval

    async def counted(source: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        scripts.append(list(keys))
        if sources is not None:
            sources.append(source)
        return await real(source, keys, args)

    link.eval = counted  # type: ignore[method-assign]
    return link, scripts


#: What the fake server answers to a command (raw bytes on the wire), given its words.
Answer = Callable[[list[bytes]], bytes]


#: What an `Answer` returns to have the fake server reset the connection (RST, after the replies written so far).
RESET = b"\0reset"


@asynccontextmanager
async def fake_redis(answer: Answer, accepted: list[asyncio.StreamWriter] | None = None) -> AsyncIterator[str]:
    """A server that parses each command with hiredis and writes `answer(words)` back (b"": nothing; `RESET`: the
    connection reset); its URL. Each connection's writer is appended to `accepted` when given."""
    import socket
    import struct

    import hiredis

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if accepted is not None:
            accepted.append(writer)
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (words := parser.gets()) is not False:
                    reply = answer(words)
                    if reply is RESET:
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        writer.transport.abort()
                        return
                    writer.write(reply)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.close()


@asynccontextmanager
async def fake_link(answer: Answer, accepted: list[asyncio.StreamWriter] | None = None,
                    **options: Any) -> AsyncIterator[RedisLink]:
    """A link (`options`: RedisLink's) to `fake_redis(answer, accepted)`, started, closed afterwards."""
    async with fake_redis(answer, accepted) as url:
        link = RedisLink(url, **options)
        try:
            await link.start()
            yield link
        finally:
            await link.aclose()


#: HELLO 3's reply (redis-py 8 speaks RESP3 by default): a map that says the protocol.
HELLO_3 = b"%1\r\n$5\r\nproto\r\n:3\r\n"


_FAKE_MARKERS: dict[bytes, bytes] = {}


def echo(words: list[bytes]) -> bytes:
    """ECHO's reply (any command's first argument, as a bulk string)."""
    return b"$%d\r\n%s\r\n" % (len(words[1]), words[1])


def handshake_then(answer: Answer) -> Answer:
    """The redis-py handshake (HELLO, CLIENT SETINFO), PING and the link's marker (SET NX, GET: see `_write_markers`)
    answered as Redis does (the markers kept across the helpers a test makes); the rest by `answer`."""
    markers = _FAKE_MARKERS

    def reply(words: list[bytes]) -> bytes:
        name = words[0].upper()
        if name == b"HELLO":
            return HELLO_3
        if name == b"CLIENT":
            return b"+OK\r\n"
        if name == b"PING":
            return b"+PONG\r\n"
        if name in (b"SET", b"GET") and b"{switchman-link}" in words[1]:
            if name == b"SET":
                markers.setdefault(words[1], words[2])
                return b"+OK\r\n"
            value = markers.get(words[1])
            return b"_\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)
        return answer(words)
    return reply
