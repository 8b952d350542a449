"""What `server.durability: sync` costs, and what kill -9 loses without it.

    python benchmarks/bench_durability.py [--requests 2000] [--kills 3] [--out benchmarks/results/durability.json]

`switchman serve` (one worker) in front of the fake upstream, ledger on SQLite (a file) and on
Postgres (127.0.0.1:5432/test, a schema of its own), each with `durability: batched` (the default:
rows written every 50 ms) and `sync` (each answer waits for its row's commit). Measured per case:

- non-stream latency p50/p99 and requests/s at concurrency 1 and 50 (keep-alive clients);
- kill -9 under load at concurrency 50: answers the clients received whose row is missing after the
  kill (summed over `--kills` runs), and how many answers were received.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from switchman.ledger import Ledger
from switchman.testing import FakeUpstream

KEY = "sk-bench-upstream-key-000000000000"
ASK = [{"role": "user", "content": "Say hello to the benchmark, please."}]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(folder: Path, upstream: FakeUpstream, ledger_url: str, durability: str) -> Path:
    data = {"providers": {"mock": {"kind": "openai", "base_url": upstream.openai_base_url,
                                   "api_key_env": "BENCH_UPSTREAM_KEY"}},
            "models": {"small": {"provider": "mock", "input_price": 0.1, "output_price": 0.2}},
            "routes": {"default": {"candidates": ["small"], "strategy": "cheapest"}},
            "server": {"ledger_url": ledger_url, "durability": durability}}
    path = folder / f"switchman-{durability}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start(config: Path, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from switchman.cli import app; app()", "serve", "--config", str(config),
         "--port", str(port)], env={**os.environ, "BENCH_UPSTREAM_KEY": KEY},
        stderr=(folder / "serve.log").open("ab"))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/health").status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.1)


async def load(base: str, concurrency: int, total: int) -> dict[str, float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        async def worker(count: int) -> None:
            for _ in range(count):
                started = time.perf_counter()
                response = await http.post("/v1/chat/completions", json={"model": "auto", "messages": ASK})
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker(10) for _ in range(concurrency)))  # warm-up
        latencies.clear()
        started = time.perf_counter()
        await asyncio.gather(*(worker(total // concurrency) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {"concurrency": concurrency, "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000, "rps": len(latencies) / wall}


async def answered_until_killed(base: str, process: subprocess.Popen[bytes], seconds: float) -> list[str]:
    answered: list[str] = []
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=httpx.Limits(max_connections=50)) as http:
        async def worker() -> None:
            while not stop.is_set():
                try:
                    response = await http.post("/v1/chat/completions", json={"model": "auto", "messages": ASK})
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    answered.append(response.headers["x-switchman-request-id"])

        tasks = [asyncio.create_task(worker()) for _ in range(50)]
        await asyncio.sleep(seconds)
        process.send_signal(signal.SIGKILL)
        stop.set()
        await asyncio.gather(*tasks)
    process.wait(10)
    return answered


def measure(case: str, ledger_url: str, durability: str, upstream: FakeUpstream, folder: Path,
            requests: int, kills: int) -> dict[str, Any]:
    config = write_config(folder, upstream, ledger_url, durability)
    process, base = start(config, folder)
    try:
        rows = [asyncio.run(load(base, c, requests)) for c in (1, 50)]
    finally:
        process.terminate()
        process.wait(30)
    lost = answered_total = 0
    for _ in range(kills):
        process, base = start(config, folder)
        answered = asyncio.run(answered_until_killed(base, process, 2.0))
        ledger = Ledger(ledger_url)
        written = {r.request_id for r in ledger.records()}
        ledger.close_sync()
        answered_total += len(answered)
        lost += len(set(answered) - written)
    result = {"ledger": case, "durability": durability, "load": rows, "kill9_answered": answered_total,
              "kill9_answered_without_row": lost}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/durability.json"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-durability-"))
    schema = f"bench_durability_{secrets.token_hex(4)}"
    from sqlalchemy import create_engine, text

    admin = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with admin.begin() as conn:
        conn.execute(text(f"create schema {schema}"))
    results = []
    try:
        with FakeUpstream() as upstream:
            for durability in ("batched", "sync"):
                sqlite = f"sqlite:///{folder / f'ledger-{durability}.sqlite3'}"
                results.append(measure("sqlite", sqlite, durability, upstream, folder, args.requests, args.kills))
                pg = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}_{durability}"
                with admin.begin() as conn:
                    conn.execute(text(f"create schema {schema}_{durability}"))
                results.append(measure("postgres", pg, durability, upstream, folder, args.requests, args.kills))
    finally:
        with admin.begin() as conn:
            for name in (schema, f"{schema}_batched", f"{schema}_sync"):
                conn.execute(text(f"drop schema if exists {name} cascade"))
        admin.dispose()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "load": os.getloadavg(), "cpus": os.cpu_count()}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
