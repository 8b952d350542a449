"""CPU to read and route a request body large in items rather than bytes (the item caps' benchmark).

For each endpoint (chat, Anthropic messages, Responses) and each kind of tiny item (messages, content parts,
tool calls, tools, ...), builds a body just under the default `server.max_body_bytes` (4,000,000) made of as
many of that item as fit, and measures the process's CPU seconds (`time.process_time`, all threads: a large
body is parsed in a worker thread), best of `--repeat`, for what the gateway does with it before any upstream
call: `parse_request` (parse, item caps, depth walk, validation and translation, prompt size, context) then
`Dispatcher.decide` (the token count). A refused body prints its error. `--at-caps` measures instead the
largest body each endpoint accepts at the default caps (10,000 messages holding 20,000 content parts and
10,000 tool calls, 1,024 tools). Nothing listens: the upstream is never called.

    PYTHONPATH=src python benchmarks/bench_items.py [--only chat.tools messages.tool_use ...] [--repeat 3]
    PYTHONPATH=src python benchmarks/bench_items.py --at-caps [--profile]

Run from the tree to measure (`PYTHONPATH` picks the source, so the same script measures a tree before the
caps), under a lock of your own (e.g. `flock LOCKFILE python ...`) so that no other benchmark shares the CPU,
recording `uptime` with the numbers. The ledger goes to a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson

from switchman._config import parse_config
from switchman._exceptions import InvalidRequestError
from switchman.gateway import Gateway
from switchman.gateway._dialects._messages import chat_from_messages
from switchman.gateway._dialects._responses import chat_from_responses
from switchman.gateway._dispatcher import Dispatcher
from switchman.gateway._endpoints import parse_request
from switchman.gateway._schema import check_body

MAX_BYTES = 4_000_000
_USER = {"role": "user", "content": "a"}
_CALL = {"id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}
_TOOL_USE = {"type": "tool_use", "id": "a", "name": "f", "input": {}}
_FUNCTION_CALL = {"type": "function_call", "call_id": "a", "name": "f", "arguments": ""}
_Make = Callable[[list[Any]], dict[str, Any]]

#: endpoint -> (the API name parse_request is given, the translation and validation it runs)
_APIS: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "chat": ("chat.completions", check_body), "messages": ("messages", chat_from_messages),
    "responses": ("responses", chat_from_responses)}


def _anthropic(messages: list[Any], **fields: Any) -> dict[str, Any]:
    return {"model": "auto", "max_tokens": 5, "messages": messages, **fields}


#: "endpoint.kind" -> (the body around a list of items, one item)
CASES: dict[str, tuple[_Make, Any]] = {
    "chat.messages": (lambda xs: {"model": "auto", "messages": xs}, {"role": "user", "content": ""}),
    "chat.parts": (lambda xs: {"model": "auto", "messages": [{"role": "user", "content": xs}]},
                   {"type": "text", "text": ""}),
    "chat.tool_calls": (lambda xs: {"model": "auto", "messages": [_USER, {"role": "assistant", "tool_calls": xs}]},
                        _CALL),
    "chat.tools": (lambda xs: {"model": "auto", "messages": [_USER], "tools": xs},
                   {"type": "function", "function": {"name": "f"}}),
    "chat.stop": (lambda xs: {"model": "auto", "messages": [_USER], "stop": xs}, ""),
    "chat.schema": (lambda xs: {"model": "auto", "messages": [_USER], "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"a": xs}}}]}, []),
    "messages.schema": (lambda xs: _anthropic([_USER], tools=[{"name": "f", "input_schema": {"a": xs}}]), []),
    "messages.messages": (lambda xs: _anthropic(xs), {"role": "user", "content": ""}),
    "messages.blocks": (lambda xs: _anthropic([{"role": "user", "content": xs}]), {"type": "text", "text": ""}),
    "messages.tool_use": (lambda xs: _anthropic([_USER, {"role": "assistant", "content": xs}]), _TOOL_USE),
    "messages.tool_result": (lambda xs: _anthropic([{"role": "user", "content": xs}]),
                             {"type": "tool_result", "tool_use_id": "a"}),
    "messages.tools": (lambda xs: _anthropic([_USER], tools=xs), {"name": "f", "input_schema": {}}),
    "messages.system": (lambda xs: _anthropic([_USER], system=xs), {"type": "text", "text": ""}),
    "messages.stop": (lambda xs: _anthropic([_USER], stop_sequences=xs), ""),
    "responses.input": (lambda xs: {"model": "auto", "input": xs}, {"role": "user", "content": ""}),
    "responses.parts": (lambda xs: {"model": "auto", "input": [{"role": "user", "content": xs}]},
                        {"type": "input_text", "text": ""}),
    "responses.function_call": (lambda xs: {"model": "auto", "input": [_USER, *xs]}, _FUNCTION_CALL),
    "responses.tools": (lambda xs: {"model": "auto", "input": "a", "tools": xs}, {"type": "function", "name": "f"}),
}


def filled(make: _Make, item: Any) -> tuple[bytes, int]:
    """The body `make` builds around as many copies of `item` as fit in MAX_BYTES, and that number."""
    n = (MAX_BYTES - len(orjson.dumps(make([item])))) // (len(orjson.dumps(item)) + 1) + 1
    raw = orjson.dumps(make([item] * n))
    assert len(raw) <= MAX_BYTES, len(raw)
    return raw, n


def at_caps(endpoint: str) -> bytes:
    """The largest body `endpoint` accepts at the default item caps."""
    if endpoint == "chat":
        messages = [{"role": "user", "content": [{"type": "text", "text": ""}] * 4}] * 5000
        messages += [{"role": "assistant", "tool_calls": [_CALL] * 2}] * 5000
        body = {"model": "auto", "messages": messages, "tools": [{"type": "function", "function": {"name": "f"}}] * 1024}
    elif endpoint == "messages":
        turns = [{"role": "user", "content": [{"type": "text", "text": ""}] * 4}] * 5000
        turns += [{"role": "assistant", "content": [_TOOL_USE] * 2}] * 5000
        body = _anthropic(turns, tools=[{"name": "f", "input_schema": {}}] * 1024)
    else:
        items = [{"role": "user", "content": [{"type": "input_text", "text": ""}] * 4}] * 5000
        body = {"model": "auto", "input": items + [_FUNCTION_CALL] * 5000,
                "tools": [{"type": "function", "name": "f"}] * 1024}
    return orjson.dumps(body)


def dispatcher(folder: str) -> Dispatcher:
    """A gateway's dispatcher with two models on an upstream nobody calls, the prompt size cap out of the way, its
    ledger in `folder`."""
    provider = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "FAKE_KEY"}
    model = {"provider": "fake", "input_price": 1.0, "output_price": 2.0, "context_window": 10_000_000,
             "capabilities": ["tools", "json", "vision"]}
    data = {"providers": {"fake": provider}, "models": {"cheap": model, "big": {**model, "input_price": 10.0}},
            "routes": {"default": {"candidates": ["cheap", "big"], "strategy": "cheapest"}},
            "server": {"ledger_url": f"sqlite:///{folder}/ledger.sqlite3",
                       "limits": {"max_prompt_chars": 100_000_000}}}
    return Gateway.from_config(parse_config(data), env={"FAKE_KEY": "unused"}).dispatcher


async def _read_and_decide(reading: Dispatcher, endpoint: str, raw: bytes) -> None:
    api, parse = _APIS[endpoint]
    body, context = await parse_request(reading, {}, raw, {}, parse, api=api, record=False)
    reading.decide(body, context)


def cpu(reading: Dispatcher, endpoint: str, raw: bytes) -> tuple[float, str]:
    """CPU seconds to read and route `raw` once, and "ok" or the error it was refused with."""
    loop = asyncio.new_event_loop()
    try:
        started = time.process_time()
        try:
            loop.run_until_complete(_read_and_decide(reading, endpoint, raw))
            outcome = "ok"
        except InvalidRequestError as exc:  # a refusal is a result here
            outcome = f"{type(exc).__name__}: {str(exc)[:90]}"
        return time.process_time() - started, outcome
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=[], metavar="ENDPOINT.KIND", choices=list(CASES),
                        help="cases to run (default: all)")
    parser.add_argument("--at-caps", action="store_true", help="the largest bodies accepted at the default caps")
    parser.add_argument("--repeat", type=int, default=3, help="runs per body; the least CPU is reported")
    parser.add_argument("--profile", action="store_true", help="cProfile each body once more (top 12 by own time)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-items-") as folder:
        _run(args, dispatcher(folder))


def _run(args: argparse.Namespace, reading: Dispatcher) -> None:
    if args.at_caps:
        bodies = [(endpoint, "at-caps", at_caps(endpoint), 0) for endpoint in _APIS]
    else:
        bodies = [(name.split(".")[0], name.split(".")[1], *filled(*CASES[name]))
                  for name in (args.only or CASES)]
    for endpoint, kind, raw, n in bodies:
        best = min(cpu(reading, endpoint, raw) for _ in range(args.repeat))
        print(f"{endpoint:10s} {kind:13s} n={n:7d} bytes={len(raw):8d} cpu={best[0]:.3f}s  {best[1]}", flush=True)
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(cpu, reading, endpoint, raw)
            pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
