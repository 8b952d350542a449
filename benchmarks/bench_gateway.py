"""Gateway overhead: switchman serve in front of a fast mock upstream, all on loopback.

    python benchmarks/bench_gateway.py [--requests 2000] [--out benchmarks/results/bench_gateway.json]

Three processes: the mock upstream (switchman.testing.FakeUpstream), the gateway (`switchman serve`,
one worker) and this load client (a minimal keep-alive HTTP/1.1 client, so the client's own cost
stays small and is the same for both paths). Measured:

- non-stream latency p50/p99 and requests/s at concurrency 1, 10, 50, direct to the upstream and
  through the gateway (static `cheapest` route, and a learned kNN route); added p50 = gateway - direct;
- streaming time to first event, direct and through the gateway (the relay overhead);
- gateway CPU ms per request (from /proc, user + system) and resident memory of the worker.

The same run through LiteLLM's proxy (in its own virtualenv) is a follow-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

KEY = "sk-bench-upstream-key-000000000000"
WARMUP = 20  # requests per connection before measuring
BODY = {"model": "auto", "messages": [{"role": "system", "content": "You are terse."},
                                      {"role": "user", "content": "Say hello to the benchmark, please."}],
        "max_tokens": 64}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_request(path: str, body: dict[str, Any], port: int, headers: dict[str, str] | None = None) -> bytes:
    payload = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", f"host: 127.0.0.1:{port}", "content-type: application/json",
            f"content-length: {len(payload)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


class Connection:
    """One keep-alive HTTP/1.1 connection (just enough protocol for this benchmark)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader, self.writer, self.port = reader, writer, port
        self.closing = False  # the server said `connection: close` (e.g. its keepalive_max_requests)

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, port)

    async def _reopen_if_closing(self) -> None:
        if self.closing:
            self.writer.close()
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.closing = False

    async def _head(self) -> dict[str, str]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        self.closing = headers.get("connection", "").lower() == "close"
        return headers

    async def call(self, raw: bytes) -> float:
        """Send a request, read the whole answer; seconds taken."""
        await self._reopen_if_closing()
        started = time.perf_counter()
        self.writer.write(raw)
        headers = await self._head()
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        else:
            await self._chunks(None)
        return time.perf_counter() - started

    async def stream(self, raw: bytes) -> float:
        """Send a streaming request; seconds to the first data event (the rest is read too)."""
        await self._reopen_if_closing()
        started = time.perf_counter()
        self.writer.write(raw)
        await self._head()
        first: list[float] = []
        await self._chunks(first)
        return first[0] - started

    async def _chunks(self, first: list[float] | None) -> None:
        while True:
            size = int((await self.reader.readline()).strip(), 16)
            data = await self.reader.readexactly(size + 2)
            if first is not None and not first and b"data:" in data:
                first.append(time.perf_counter())
            if size == 0:
                return

    def close(self) -> None:
        self.writer.close()


async def run_load(port: int, raw: bytes, concurrency: int, total: int, *, stream: bool = False) -> dict[str, float]:
    connections = [await Connection.open(port) for _ in range(concurrency)]
    latencies: list[float] = []
    per_connection = total // concurrency

    async def warm(conn: Connection) -> None:  # every connection (and the upstream pool behind it)
        for _ in range(WARMUP):
            await (conn.stream(raw) if stream else conn.call(raw))

    async def worker(conn: Connection) -> None:
        for _ in range(per_connection):
            latencies.append(await (conn.stream(raw) if stream else conn.call(raw)))

    await asyncio.gather(*(warm(c) for c in connections))

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    wall = time.perf_counter() - started
    for conn in connections:
        conn.close()
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "rps": len(latencies) / wall,
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def learned_router(folder: Path) -> Path | None:
    """A small kNN router (wordllama-256) trained on a synthetic math/greeting table."""
    import numpy as np

    from switchman.evaluate import OutcomeTable
    from switchman.learn import TrainSettings, train_router

    rng = random.Random(0)
    prompts, quality = [], []
    for i in range(60):
        prompts.append(f"What is {rng.randint(2, 99)} times {rng.randint(2, 99)}? Show your working.")
        quality.append([0.0, 1.0])
        prompts.append(f"Hello friend number {i}, how are you today?")
        quality.append([1.0, 1.0])
    n = len(prompts)
    table = OutcomeTable(
        prompt_ids=[f"p{i}" for i in range(n)], prompts=prompts, tasks=["t"] * n, splits=["train"] * n,
        models=("weak", "strong"), quality=np.array(quality), input_tokens=np.full((n, 2), 20.0),
        output_tokens=np.tile([[50.0, 80.0]], (n, 1)), cost_usd=np.tile([[1e-5, 1e-3]], (n, 1)), source="bench",
    )
    router = train_router(table, TrainSettings(embedder="wordllama-256", algorithm="knn", params={"k": 10}),
                          use_cache=False)
    return router.save(folder / "router.safetensors")


def gateway_config(upstream_port: int, folder: Path, router_file: Path | None) -> Path:
    base = f"http://127.0.0.1:{upstream_port}/v1"
    models = {
        "small": {"provider": "mock", "input_price": 0.1, "output_price": 0.2},
        "large": {"provider": "mock", "input_price": 5.0, "output_price": 10.0},
    }
    routes: dict[str, Any] = {"default": {"candidates": ["small", "large"], "strategy": "cheapest"}}
    if router_file is not None:
        routes["learned"] = {"candidates": ["small", "large"], "strategy": "learned", "router": str(router_file),
                             "aliases": {"weak": "small", "strong": "large"}}
    data = {"providers": {"mock": {"kind": "openai", "base_url": base, "api_key_env": "BENCH_UPSTREAM_KEY"}},
            "models": models, "routes": routes, "default_route": "default",
            "server": {"ledger_url": f"sqlite:///{folder / 'ledger.sqlite3'}"}}
    path = folder / "switchman.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_gateway.json"))
    parser.add_argument("--no-learned", action="store_true", help="skip the learned route")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    env = {**os.environ, "BENCH_UPSTREAM_KEY": KEY}
    up_port, gw_port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom switchman.testing import FakeUpstream\n"
         f"FakeUpstream(port={up_port}).start()\nwhile True: time.sleep(3600)"], env=env)
    router_file = None if args.no_learned else learned_router(folder)
    config = gateway_config(up_port, folder, router_file)
    gateway = subprocess.Popen(
        [sys.executable, "-c", "from switchman.cli import app; app()", "serve", "--config", str(config),
         "--port", str(gw_port)], env=env, stderr=(folder / "serve.log").open("wb"))
    try:
        wait_for_port(up_port, upstream)
        wait_for_port(gw_port, gateway)
        results = asyncio.run(measure(up_port, gw_port, gateway.pid, args.requests, router_file is not None))
    finally:
        gateway.terminate()
        upstream.terminate()
        gateway.wait(30)
        upstream.wait(30)
    results["environment"] = {"python": sys.version.split()[0], "cpus": os.cpu_count(),
                              "requests_per_measurement": args.requests}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nwritten to {args.out}")


async def measure(up_port: int, gw_port: int, gw_pid: int, total: int, learned: bool) -> dict[str, Any]:
    direct_raw = http_request("/v1/chat/completions", {**BODY, "model": "small"}, up_port,
                              {"authorization": f"Bearer {KEY}"})
    static_raw = http_request("/v1/chat/completions", BODY, gw_port)
    results: dict[str, Any] = {"direct": [], "static": [], "learned": [], "stream": {}}
    for concurrency in (1, 10, 50):
        results["direct"].append(await run_load(up_port, direct_raw, concurrency, total))
        cpu_before = cpu_seconds(gw_pid)
        row = await run_load(gw_port, static_raw, concurrency, total)
        # warm-up calls count too
        row["cpu_ms_per_request"] = (cpu_seconds(gw_pid) - cpu_before) * 1000 / (total + WARMUP * concurrency)
        results["static"].append(row)
        if learned:
            learned_raw = http_request("/v1/chat/completions", {**BODY, "model": "auto:learned"}, gw_port)
            cpu_before = cpu_seconds(gw_pid)
            row = await run_load(gw_port, learned_raw, concurrency, total)
            row["cpu_ms_per_request"] = (cpu_seconds(gw_pid) - cpu_before) * 1000 / (total + WARMUP * concurrency)
            results["learned"].append(row)
    stream_direct = http_request("/v1/chat/completions", {**BODY, "model": "small", "stream": True}, up_port,
                                 {"authorization": f"Bearer {KEY}"})
    stream_gateway = http_request("/v1/chat/completions", {**BODY, "stream": True}, gw_port)
    results["stream"]["direct_ttft"] = await run_load(up_port, stream_direct, 1, total // 2, stream=True)
    results["stream"]["gateway_ttft"] = await run_load(gw_port, stream_gateway, 1, total // 2, stream=True)
    results["rss_mib"] = rss_mib(gw_pid)
    direct_p50 = results["direct"][0]["p50_ms"]
    results["added_p50_ms_c1"] = {"static": results["static"][0]["p50_ms"] - direct_p50}
    if learned:
        results["added_p50_ms_c1"]["learned"] = results["learned"][0]["p50_ms"] - direct_p50
    stream = results["stream"]
    results["added_ttft_p50_ms"] = stream["gateway_ttft"]["p50_ms"] - stream["direct_ttft"]["p50_ms"]
    return results


def print_table(results: dict[str, Any]) -> None:
    print(f"{'path':<10}{'conc':>6}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}{'CPU ms/req':>12}")
    for path in ("direct", "static", "learned"):
        for row in results[path]:
            cpu = row.get("cpu_ms_per_request")
            print(f"{path:<10}{row['concurrency']:>6}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}{row['rps']:>10.0f}"
                  f"{'' if cpu is None else f'{cpu:.3f}':>12}")
    for name, row in results["stream"].items():
        print(f"{name:<16} p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms")
    print(f"added p50 at concurrency 1: {results['added_p50_ms_c1']}")
    print(f"added time to first event p50: {results['added_ttft_p50_ms']:.3f} ms")
    print(f"gateway worker RSS: {results['rss_mib']:.1f} MiB")


if __name__ == "__main__":
    main()
