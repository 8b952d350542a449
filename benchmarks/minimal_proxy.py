"""The floor for a Python proxy: the least an OpenAI-compatible proxy on aiohttp can do per request.

    python benchmarks/minimal_proxy.py --port 9000 --upstream http://127.0.0.1:9001/v1 --model small

POST /v1/chat/completions: parse the JSON body, set `model`, send it upstream over a keep-alive pool
(aiohttp's client), answer with the upstream's body (non-stream) or relay its chunks as they come
(stream). No routing, no validation, no record, no metrics, no access log: what is left is the HTTP
server, the HTTP client and one JSON round trip. It runs on uvloop, as `switchman serve` does.
bench_hotpath.py measures switchman against it side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

import aiohttp
import uvloop
from aiohttp import web


async def serve(port: int, upstream: str, model: str, key: str) -> None:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    url = upstream.rstrip("/") + "/chat/completions"
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        body["model"] = model
        async with session.post(url, data=json.dumps(body), headers=headers) as answer:
            if not body.get("stream"):
                return web.Response(body=await answer.read(), status=answer.status, content_type="application/json")
            relay = web.StreamResponse(status=answer.status, headers={"content-type": "text/event-stream"})
            await relay.prepare(request)
            async for chunk in answer.content.iter_any():
                await relay.write(chunk)
            await relay.write_eof()
            return relay

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await session.close()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's base URL, e.g. http://127.0.0.1:9001/v1")
    parser.add_argument("--model", default="small", help="the model name sent upstream")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.upstream, args.model, os.environ.get("BENCH_UPSTREAM_KEY", "")))


if __name__ == "__main__":
    main()
