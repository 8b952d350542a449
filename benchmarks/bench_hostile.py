"""A bounded hostile run against `switchman serve` on loopback: what the gateway holds, and whether it answers.

    python benchmarks/bench_hostile.py [--src DIR] [--per-client-cap N] [--max-prompt-chars N]
                                       [--out benchmarks/results/hostile.json]

`--src` runs the gateway from another source tree (e.g. `git archive 884d214 src | tar -x -C /tmp/before`
then `--src /tmp/before/src`), so the same attack measures the code before and after. The gateway
runs as a subprocess (one worker, fake upstream on loopback) with its file-descriptor limit set to
4096 (soft and hard), and this process attacks it from 127.0.0.2 while probing `GET /health` from
127.0.0.1 ten times a second on a fresh connection (2 s timeout). Phases, one after the other:

1. slowloris: 4,500 connections send a partial request head and one more header line every 5 s,
   for 40 s (more connections than the gateway has descriptors);
2. big heads: 100 connections each send a 4 MB header that never ends, then hold it for 10 s;
3. long prompts: 4 requests at once with a 3.9 MB prompt of one repeated character.

Reported per phase: connections the gateway held (sockets in /proc/PID/fd, sampled each second:
max and at the end), its peak resident memory, and /health latency p50/p99/max with how many probes
failed (refused, reset, timed out, or not 200).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ATTACKER = "127.0.0.2"
FD_LIMIT = 4096
KEY = "sk-bench-upstream-key-000000000000"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sockets_held(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Probe:
    """GET /health ten times a second on fresh connections; latencies and failures."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.failures: dict[str, int] = {}

    async def once(self) -> None:
        started = time.perf_counter()
        writer = None
        try:
            async with asyncio.timeout(2.0):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(f"GET /health HTTP/1.1\r\nhost: 127.0.0.1:{self.port}\r\n\r\n".encode())
                line = await reader.readline()
            if not line.startswith(b"HTTP/1.1 200"):
                self._fail(line.split(b" ")[1].decode() if line.count(b" ") >= 1 else "empty")
                return
            self.latencies.append(time.perf_counter() - started)
        except TimeoutError:
            self._fail("timeout")
        except OSError as exc:
            self._fail(type(exc).__name__)
        finally:
            if writer is not None:
                writer.close()

    def _fail(self, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1

    async def run(self, stop: asyncio.Event) -> None:
        tasks = []
        while not stop.is_set():
            tasks.append(asyncio.create_task(self.once()))
            await asyncio.sleep(0.1)
        await asyncio.gather(*tasks)

    def summary(self) -> dict[str, Any]:
        ms = sorted(x * 1000 for x in self.latencies)
        return {
            "probes": len(ms) + sum(self.failures.values()),
            "ok": len(ms),
            "failures": self.failures,
            "p50_ms": statistics.median(ms) if ms else None,
            "p99_ms": ms[max(int(len(ms) * 0.99) - 1, 0)] if ms else None,
            "max_ms": ms[-1] if ms else None,
        }


async def attacker_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    try:
        return await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0)), 5.0)
    except (OSError, TimeoutError):
        return None


async def slowloris(port: int, connections: int, seconds: float) -> dict[str, int]:
    opened: list[asyncio.StreamWriter] = []
    failed = 0
    for batch in range(0, connections, 250):
        results = await asyncio.gather(*(attacker_connection(port) for _ in range(min(250, connections - batch))))
        for result in results:
            if result is None:
                failed += 1
                continue
            _, writer = result
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
            opened.append(writer)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(5.0)
        for i, writer in enumerate(opened):
            if not writer.is_closing():
                writer.write(f"x-slow-{i}: 1\r\n".encode())
    for writer in opened:
        writer.close()
    return {"opened": len(opened), "connect_failed": failed}


async def big_heads(port: int, connections: int, size: int, hold: float) -> dict[str, int]:
    chunk = b"x-big: " + b"a" * (64 * 1024)
    writers = []

    async def one() -> None:
        result = await attacker_connection(port)
        if result is None:
            return
        _, writer = result
        writers.append(writer)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        sent = 0
        try:
            while sent < size:
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 10.0)
                sent += len(chunk)
        except (OSError, TimeoutError):
            return

    await asyncio.gather(*(one() for _ in range(connections)))
    await asyncio.sleep(hold)
    for writer in writers:
        writer.close()
    return {"opened": len(writers)}


async def long_prompts(port: int, count: int, chars: int) -> dict[str, Any]:
    body = json.dumps({"model": "auto", "max_tokens": 16,
                       "messages": [{"role": "user", "content": "a" * chars}]}).encode()
    raw = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
           f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body

    async def one() -> tuple[str, float]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(120):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(raw)
                line = await reader.readline()
                writer.close()
        except (OSError, TimeoutError) as exc:
            return type(exc).__name__, time.perf_counter() - started
        return line.decode().split(" ")[1], time.perf_counter() - started

    results = await asyncio.gather(*(one() for _ in range(count)))
    return {"statuses": [s for s, _ in results], "seconds": [round(t, 2) for _, t in results]}


async def phase(name: str, port: int, pid: int, attack: Any) -> dict[str, Any]:
    probe, stop = Probe(port), asyncio.Event()
    held: list[int] = []
    peak_rss = rss_mib(pid)

    async def sample() -> None:
        nonlocal peak_rss
        while not stop.is_set():
            held.append(sockets_held(pid))
            peak_rss = max(peak_rss, rss_mib(pid))
            await asyncio.sleep(1.0)

    rss_before = rss_mib(pid)
    probing = asyncio.create_task(probe.run(stop))
    sampling = asyncio.create_task(sample())
    started = time.perf_counter()
    detail = await attack
    stop.set()
    await asyncio.gather(probing, sampling)
    result = {"phase": name, "seconds": round(time.perf_counter() - started, 1), "attack": detail,
              "sockets_held_max": max(held), "sockets_held_end": held[-1], "sockets_by_second": held,
              "rss_before_mib": round(rss_before, 1), "rss_peak_mib": round(peak_rss, 1),
              "health": probe.summary()}
    print(json.dumps({k: v for k, v in result.items() if k != "sockets_by_second"}), flush=True)
    await asyncio.sleep(12.0)  # let the gateway settle between phases
    return result


def write_config(folder: Path, upstream_port: int, limits: dict[str, int]) -> Path:
    base = f"http://127.0.0.1:{upstream_port}/v1"
    server: dict[str, Any] = {"ledger_url": f"sqlite:///{folder / 'ledger.sqlite3'}"}
    if limits:
        server["limits"] = limits
        server["max_body_bytes"] = 8_000_000
    data = {"providers": {"mock": {"kind": "openai", "base_url": base, "api_key_env": "BENCH_UPSTREAM_KEY"}},
            "models": {"small": {"provider": "mock", "input_price": 0.1, "output_price": 0.2,
                                 "context_window": 10_000_000}},
            "routes": {"default": {"candidates": ["small"], "strategy": "cheapest"}}, "server": server}
    path = folder / "switchman.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


async def attack_all(port: int, pid: int) -> list[dict[str, Any]]:
    return [
        await phase("slowloris", port, pid, slowloris(port, 4500, 40.0)),
        await phase("big_heads", port, pid, big_heads(port, 100, 4 * 1024 * 1024, 10.0)),
        await phase("long_prompts", port, pid, long_prompts(port, 4, 3_900_000)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    parser.add_argument("--per-client-cap", type=int, default=None, help="server.limits.max_connections_per_client")
    parser.add_argument("--max-prompt-chars", type=int, default=None, help="server.limits.max_prompt_chars")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/hostile.json"))
    args = parser.parse_args()
    from switchman.testing import FakeUpstream

    folder = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    env = {**os.environ, "BENCH_UPSTREAM_KEY": KEY, "PYTHONPATH": str(args.src.resolve())}
    port = free_port()
    with FakeUpstream() as upstream:
        limits = {name: value for name, value in (("max_connections_per_client", args.per_client_cap),
                                                  ("max_prompt_chars", args.max_prompt_chars)) if value is not None}
        config = write_config(folder, upstream.port, limits)
        gateway = subprocess.Popen(
            [sys.executable, "-c", "from switchman.cli import app; app()", "serve", "--config", str(config),
             "--port", str(port)], env=env, stderr=(folder / "serve.log").open("wb"), preexec_fn=limit_fds)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or gateway.poll() is not None:
                        raise RuntimeError("the gateway did not start") from None
                    time.sleep(0.1)
            phases = asyncio.run(attack_all(port, gateway.pid))
        finally:
            gateway.terminate()
            gateway.wait(30)
    log = (folder / "serve.log").read_text(errors="replace")
    result = {"src": str(args.src), "limits": limits, "fd_limit": FD_LIMIT, "phases": phases,
              "log_lines": log.count("\n"), "load": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written to {args.out} (gateway log: {result['log_lines']} lines, {folder / 'serve.log'})")


if __name__ == "__main__":
    main()
