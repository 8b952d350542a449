"""What a learned route with the bundled router adds, for short and long prompts, through the gateway.

    python benchmarks/bench_long_prompts.py [--requests 600] [--out benchmarks/results/bench_long_prompts.json]

Three processes on loopback: the mock upstream (switchman.testing.FakeUpstream), `switchman serve`
(one worker) and bench_gateway's keep-alive load client, at concurrency 1. For each prompt size
(a short question; ~4,000 cl100k tokens; ~1,000,000 tokens, i.e. a 4 MB prompt) the same body goes
directly to the mock, through a static route (`cheapest`) and through a learned route (the bundled
router over two models placed by their public scores). Added p50 = gateway − direct; the learned
route's cost over the static one is its decision (token count, the embedding of the prompt's
bounded window, prediction, selection). Gateway CPU ms per request from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from bench_gateway import KEY, cpu_seconds, free_port, http_request, rss_mib, run_load, wait_for_port  # noqa: E402

WORDS = ("the router reads a long agent transcript with tool results code and notes before it decides "
         "which model answers the final question about the deployment plan").split()


def prompt_of(tokens: int) -> str:
    """English text of about `tokens` cl100k tokens (one per word here), ending with a question."""
    body = " ".join(WORDS[i % len(WORDS)] for i in range(max(tokens - 12, 0)))
    return f"{body}\nQuestion: which model should answer this, and why?"


def config(upstream_port: int, folder: Path) -> Path:
    base = f"http://127.0.0.1:{upstream_port}/v1"
    data = {
        "providers": {"mock": {"kind": "openai", "base_url": base, "api_key_env": "BENCH_UPSTREAM_KEY"}},
        "models": {"small": {"provider": "mock", "input_price": 0.15, "output_price": 0.6, "score": 1317},
                   "large": {"provider": "mock", "input_price": 2.5, "output_price": 10.0, "score": 1336}},
        "routes": {"static": {"candidates": ["small", "large"], "strategy": "cheapest"},
                   "learned": {"candidates": ["small", "large"], "strategy": "learned", "router": "bundled",
                               "target": "quality=0.95"}},
        "default_route": "static",
        "server": {"ledger_url": f"sqlite:///{folder / 'ledger.sqlite3'}", "max_body_bytes": 8_000_000},
    }
    path = folder / "switchman.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def measure(up_port: int, gw_port: int, gw_pid: int, requests: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, tokens, total in (("short", 10, requests), ("4k_tokens", 4000, requests), ("4mb", 1_000_000, 40)):
        body = {"messages": [{"role": "user", "content": prompt_of(tokens)}], "max_tokens": 16}
        row: dict[str, Any] = {"prompt_chars": len(body["messages"][0]["content"])}  # type: ignore[index]
        direct = http_request("/v1/chat/completions", {**body, "model": "small"}, up_port,
                              {"authorization": f"Bearer {KEY}"})
        row["direct"] = await run_load(up_port, direct, 1, total)
        for route in ("static", "learned"):
            raw = http_request("/v1/chat/completions", {**body, "model": f"auto:{route}"}, gw_port)
            before = cpu_seconds(gw_pid)
            row[route] = await run_load(gw_port, raw, 1, total)
            row[route]["cpu_ms_per_request"] = (cpu_seconds(gw_pid) - before) * 1000 / (total + 20)
            row[route]["added_p50_ms"] = row[route]["p50_ms"] - row["direct"]["p50_ms"]
        row["learned_over_static_p50_ms"] = row["learned"]["p50_ms"] - row["static"]["p50_ms"]
        out[label] = row
    out["rss_mib"] = rss_mib(gw_pid)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_long_prompts.json"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-long-"))
    env = {**os.environ, "BENCH_UPSTREAM_KEY": KEY}
    up_port, gw_port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, "-c", "import time\nfrom switchman.testing import FakeUpstream\n"
                                 f"FakeUpstream(port={up_port}).start()\nwhile True: time.sleep(3600)"], env=env)
    gateway = subprocess.Popen([sys.executable, "-c", "from switchman.cli import app; app()", "serve", "--config",
                                str(config(up_port, folder)), "--port", str(gw_port)], env=env,
                               stderr=(folder / "serve.log").open("wb"))
    try:
        wait_for_port(up_port, upstream)
        wait_for_port(gw_port, gateway)
        results = asyncio.run(measure(up_port, gw_port, gateway.pid, args.requests))
    finally:
        gateway.terminate()
        upstream.terminate()
        gateway.wait(30)
        upstream.wait(30)
    results["load_average"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    for label in ("short", "4k_tokens", "4mb"):
        row = results[label]
        print(f"{label:>10} ({row['prompt_chars']:,} chars): direct p50 {row['direct']['p50_ms']:.3f} ms; "
              f"static +{row['static']['added_p50_ms']:.3f} ms ({row['static']['cpu_ms_per_request']:.3f} ms CPU); "
              f"learned +{row['learned']['added_p50_ms']:.3f} ms ({row['learned']['cpu_ms_per_request']:.3f} ms CPU); "
              f"learned − static {row['learned_over_static_p50_ms']:+.3f} ms")
    print(f"gateway RSS {results['rss_mib']:.1f} MiB; load average {results['load_average']}")


if __name__ == "__main__":
    main()
