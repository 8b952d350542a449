"""Where a static-route request's CPU goes inside switchman: its own parts alone, and the whole app without sockets.

    python benchmarks/bench_hotpath_parts.py [--requests 4000]

(PYTHONPATH picks the switchman measured; run one tree, then the other, under the bench lock.) Two
figures, both in this process, no network:

- parts: each of switchman's per-request steps timed alone with timeit (µs per call, best of 5):
  request id, body parsing and validation with the context headers, the decision, the upstream
  body's encoding and the answer's decoding, the ledger row, the metrics, the answer's headers and
  Response, and the access line as `switchman serve` configures it (format and write to a file,
  amortized, in an event loop);
- app: the ASGI app `switchman serve` builds (`serving_app`), called in process at concurrency 10
  with the upstream pool replaced by a canned answer: CPU of the event-loop thread and of the
  process per request (best of 3 rounds), non-stream and stream.

What the app figure leaves out — uvicorn and the guarded protocol, aiohttp's client, the socket
calls — is `switchman serve`'s event-loop CPU under bench_hotpath.py's load minus the app figure;
the ledger writer thread is the process's CPU minus the event loop's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import logging.config
import os
import sys
import tempfile
import time
import timeit
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import BODY, KEY, gateway_config
from starlette.datastructures import Headers
from starlette.responses import Response

from switchman._config import load_config
from switchman.cli._serve_setup import log_config
from switchman.gateway import Gateway
from switchman.gateway._context import context_from
from switchman.gateway._endpoints import route_headers
from switchman.gateway._exchange import Exchange
from switchman.gateway._middleware._access_log import log_access
from switchman.gateway._middleware._request_id import new_request_id
from switchman.gateway._schema import check_body, check_prompt_size, read_json
from switchman.gateway._wire import Usage
from switchman.ui import serving_app

CONCURRENCY = 10
CONTENT = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "small",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello, benchmark!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}}).encode()
CHUNKS = [b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"w%d "},'
          b'"finish_reason":null}]}\n\n' % i for i in range(8)] + [
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":20,'
    b'"completion_tokens":9,"total_tokens":29}}\n\n', b"data: [DONE]\n\n"]
RAW_HEADERS = [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json")]


class _Canned:
    """An upstream answer: the whole body, or the stream's events as separate reads."""

    status_code = 200
    headers: dict[str, str] = {}
    closes_at_once = True  # as UpstreamResponse: `aclose` does not suspend

    async def aread(self) -> bytes:
        return CONTENT

    async def _chunks(self) -> AsyncIterator[bytes]:
        for chunk in CHUNKS:
            yield chunk

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self._chunks()

    def abort(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class _CannedPool:
    """The provider's pool with `send` answered from memory."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def request(self, *args: Any) -> Any:
        return self.real.request(*args)

    async def send(self, request: Any, **_: Any) -> _Canned:
        return _Canned()

    async def aclose(self) -> None:
        pass


def _gateway(folder: Path) -> Gateway:
    os.environ["BENCH_UPSTREAM_KEY"] = KEY
    folder.mkdir(parents=True, exist_ok=True)
    gateway = Gateway.from_config(load_config(gateway_config(9, folder, None)), base_dir=folder)
    for deployments in gateway.dispatcher.deployments.values():
        for deployment in deployments:
            deployment.provider.pool = _CannedPool(deployment.provider.pool)  # type: ignore[assignment]
    return gateway


def _access_lines_to(path: Path) -> None:
    """Access lines as `serve` configures them, into a file (what bench_hotpath.py does with stdout)."""
    logging.config.dictConfig(log_config(access_log=True))
    handler = logging.getLogger("switchman.access").handlers[0]
    stream = path.open("w")
    if hasattr(handler, "target"):  # AccessLineHandler
        handler.target = stream
    else:
        handler.setStream(stream)  # type: ignore[attr-defined]


def parts(gateway: Gateway, folder: Path) -> list[tuple[str, float]]:
    """µs per call of each step, best of 5 timeit repeats."""
    dispatcher = gateway.dispatcher
    raw = json.dumps(BODY).encode()
    try:
        from switchman.gateway._context import context_headers  # this branch: one pass over the raw headers

        def headers() -> Any:
            return context_headers(RAW_HEADERS)
    except ImportError:
        def headers() -> Any:
            return Headers(raw=RAW_HEADERS)

    def parse() -> tuple[dict[str, Any], Any]:
        body = check_body(read_json(raw, 64))
        check_prompt_size(body, 10**6)
        return body, context_from(headers(), body, request_id="abc", body_bytes=len(raw))

    rows: list[tuple[str, float]] = []

    def timed(name: str, fn: Callable[[], object], number: int = 4000) -> None:
        gc.collect()
        rows.append((name, min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6))

    body, context = parse()
    timed("request id", new_request_id)
    timed("parse: JSON, depth, pydantic, prompt size, context headers", parse)
    timed("decision: request, policy, strategy, session, its metric", lambda: dispatcher.decide(body, context))
    request, decision = dispatcher.decide(body, context)
    deployment = dispatcher.deployments["small"][0]
    timed("upstream body encoded, answer decoded",
          lambda: (deployment.build_request(body, stream=False), deployment.adapter.decode(CONTENT, "small")))
    exchange = Exchange(context, dispatcher.clock())
    exchange.request, exchange.decision, exchange.model, exchange.deployment = request, decision, "small", deployment.id
    exchange.usage = Usage(20, 9)
    candidates = ("small", "large")
    timed("ledger row built (Exchange.record)",
          lambda: exchange.record(dispatcher.decider.models, candidates, dispatcher.clock(), None))
    record = exchange.record(dispatcher.decider.models, candidates, dispatcher.clock(), None)
    assert dispatcher.metrics is not None
    metrics = dispatcher.metrics
    timed("metrics (observe_request)", lambda: metrics.observe_request(record))
    answer = {**route_headers("small", decision.reason, deployment=deployment.id), "x-switchman-cost-usd": "0.00000123"}
    timed("answer headers and Response", lambda: Response(CONTENT, media_type="application/json", headers=answer))

    async def lines(n: int) -> float:
        started = time.process_time()
        for i in range(n):
            log_access("POST", "/v1/chat/completions", 200, "small", 1.2, "0123456789abcdef0123456789abcdef")
            if i % 10 == 9:
                await asyncio.sleep(0)  # requests end in different turns of the loop
        await asyncio.sleep(0.1)  # a delayed write included
        return (time.process_time() - started) / n * 1e6

    _access_lines_to(folder / "access.log")
    rows.append(("access line: format and write, amortized", min(asyncio.run(lines(4000)) for _ in range(5))))
    return rows


async def post_chat(app: Any, raw: bytes, statuses: list[int]) -> None:
    """One POST /v1/chat/completions through the ASGI app, read to its end; its status goes to `statuses`."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8080),
             "headers": [*RAW_HEADERS, (b"content-length", str(len(raw)).encode())]}
    given = False
    ended = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await ended.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        elif not message.get("more_body"):
            ended.set()

    await app(scope, receive, send)  # type: ignore[arg-type]


async def app_cpu(gateway: Gateway, requests: int, *, stream: bool) -> dict[str, float]:
    """CPU per request of the whole ASGI app at concurrency 10 (best of 3 rounds)."""
    app = serving_app(gateway, bind_host="127.0.0.1", base_dir=".")
    raw = json.dumps({**BODY, "stream": True} if stream else BODY).encode()
    statuses: list[int] = []

    async def one() -> None:
        await post_chat(app, raw, statuses)

    async def connection(count: int) -> None:
        for _ in range(count):
            await one()

    await asyncio.gather(*(connection(50) for _ in range(CONCURRENCY)))  # warm-up
    best: tuple[float, float] | None = None
    for _ in range(3):
        process, thread = time.process_time(), time.thread_time()
        await asyncio.gather(*(connection(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
        spent = (time.process_time() - process, time.thread_time() - thread)
        best = spent if best is None or spent[0] < best[0] else best
    assert best is not None and set(statuses) == {200}, set(statuses)
    return {"process_us": best[0] / requests * 1e6, "event_loop_us": best[1] / requests * 1e6}


async def measure_app(folder: Path, requests: int) -> dict[str, dict[str, float]]:
    gateway = _gateway(folder)
    await gateway.start()
    gc.collect()
    gc.freeze()  # as `serve` does after startup
    try:
        return {kind: await app_cpu(gateway, requests, stream=kind == "stream") for kind in ("nonstream", "stream")}
    finally:
        await gateway.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per round of the app figure")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-parts-"))
    rows = parts(_gateway(folder / "parts"), folder)
    for name, us in rows:
        print(f"{us:8.1f} us  {name}")
    print(f"{sum(us for _, us in rows):8.1f} us  these parts together")
    try:
        import uvloop

        app = uvloop.run(measure_app(folder / "app", args.requests))
    except ImportError:
        app = asyncio.run(measure_app(folder / "app", args.requests))
    for kind, cpu in app.items():
        print(f"app {kind:<9}: {cpu['event_loop_us']:7.1f} us event loop, {cpu['process_us']:7.1f} us process "
              "per request (no sockets, canned upstream)")


if __name__ == "__main__":
    main()
