"""The transport under switchman measured alone: the HTTP server side and the upstream client, CPU per request.

    python benchmarks/bench_transport_parts.py [--requests 20000] [--only server|client]

(PYTHONPATH picks the switchman measured; run one tree, then the other, under the bench lock.)

- server: uvicorn + the guarded protocol (`gateway/_server.py`) serving a trivial ASGI app (one
  receive, a head with the gateway's usual headers, a 47-byte body) through a fake transport, 10
  kept-alive connections, no sockets: CPU of the event loop per request (best of 5). Under
  `valgrind --tool=callgrind --separate-threads=yes` with `--rounds 1`, the difference between
  `--requests 2500` and `--requests 500` over 2,000 is the instruction count per request.
- client: `UpstreamPool.send` + `aread` (the dispatcher's upstream call, with and without its
  `asyncio.timeout`) against `switchman.testing.FakeUpstream` in another process, at concurrency
  10, against the minimal proxy's `session.post(...)` + `read()`; process CPU per request (so the
  client's socket system calls are in it, the upstream's are not).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import BODY, KEY, free_port
from bench_litellm import wait_ready

from switchman._limits import ServerLimits
from switchman.gateway._http import UpstreamPool
from switchman.gateway._server import server_config

CONCURRENCY = 10
ANSWER = b'{"id":"chatcmpl-1","object":"chat.completion"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode()),
           (b"x-switchman-model", b"small"), (b"x-switchman-route-reason", b"cheapest candidate"),
           (b"x-switchman-cost-usd", b"0.00000123"), (b"x-switchman-request-id", b"0123456789abcdef0123456789abcdef")]


class _Transport(asyncio.Transport):
    """Takes the protocol's writes; the request's future completes on the answer's write."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: asyncio.Future[None] | None = None
        self.last = b""
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.last = bytes(data)
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(None)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def _trivial_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


async def server(requests: int, rounds: int) -> float:
    """µs of event-loop CPU per request through uvicorn + the guarded protocol (best of `rounds`)."""
    from uvicorn.server import ServerState

    config = server_config(_trivial_app, ServerLimits(), host="127.0.0.1", port=8080, log_config=None,
                           access_log=False, lifespan="off")
    config.load()
    state, loop = ServerState(), asyncio.get_running_loop()
    body = json.dumps(BODY).encode()
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:8080\r\ncontent-type: application/json\r\n"
           b"content-length: %d\r\n\r\n" % len(body)) + body
    gc.collect()
    gc.freeze()

    async def connection(count: int) -> None:
        transport = _Transport()
        protocol = config.http_protocol_class(config=config, server_state=state, app_state={}, _loop=loop)
        protocol.connection_made(transport)
        for _ in range(count):
            transport.answered = loop.create_future()
            protocol.data_received(raw)
            await transport.answered
            await asyncio.sleep(0)
        assert transport.last.startswith(b"HTTP/1.1 200"), transport.last[:80]
        protocol.connection_lost(None)

    await asyncio.gather(*(connection(50) for _ in range(CONCURRENCY)))
    best = float("inf")
    for _ in range(rounds):
        started = time.thread_time()
        await asyncio.gather(*(connection(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
        best = min(best, (time.thread_time() - started) / requests * 1e6)
    return best


async def client(requests: int) -> dict[str, float]:
    """µs of process CPU per upstream call, each way of calling measured twice (best kept)."""
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="bench-transport-")) / "upstream.log"
    upstream = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom switchman.testing import FakeUpstream\n"
         f"FakeUpstream(port={port}).start()\nwhile True: time.sleep(3600)"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, "BENCH_UPSTREAM_KEY": KEY})
    try:
        wait_ready(port, upstream, log)
        base = f"http://127.0.0.1:{port}/v1"
        body = {**BODY, "model": "small"}
        headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
        pool = UpstreamPool(base, headers)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))

        async def switchman_call() -> None:
            response = await pool.send(pool.request("POST", "/chat/completions", json.dumps(body).encode()),
                                       connect_timeout=5.0, read_timeout=60.0)
            try:
                await response.aread()
            finally:
                await response.aclose()
            assert response.status_code == 200

        async def switchman_with_total() -> None:
            async with asyncio.timeout(600.0):  # as Dispatcher._call wraps it
                await switchman_call()

        async def minimal_call() -> None:
            async with session.post(base + "/chat/completions", data=json.dumps(body), headers=headers) as answer:
                await answer.read()
            assert answer.status == 200

        async def worker(call: Callable[[], Awaitable[None]], count: int) -> None:
            for _ in range(count):
                await call()

        ways = {"minimal proxy's session.post + read": minimal_call, "UpstreamPool.send + aread": switchman_call,
                "UpstreamPool.send + aread in asyncio.timeout": switchman_with_total}
        best: dict[str, float] = {}
        for _ in range(2):
            for name, call in ways.items():
                await asyncio.gather(*(worker(call, 20) for _ in range(CONCURRENCY)))
                started = time.process_time()
                await asyncio.gather(*(worker(call, requests // CONCURRENCY) for _ in range(CONCURRENCY)))
                spent = (time.process_time() - started) / requests * 1e6
                best[name] = min(best.get(name, spent), spent)
        await session.close()
        await pool.aclose()
        return best
    finally:
        upstream.terminate()
        upstream.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5, help="server rounds (1 under callgrind)")
    parser.add_argument("--only", choices=("server", "client"), default=None)
    args = parser.parse_args()
    import uvloop

    if args.only in (None, "server"):
        print(f"{uvloop.run(server(args.requests, args.rounds)):8.1f} us  uvicorn + guarded protocol, trivial app")
    if args.only in (None, "client"):
        for name, us in uvloop.run(client(min(args.requests, 4000))).items():
            print(f"{us:8.1f} us  {name}")


if __name__ == "__main__":
    main()
