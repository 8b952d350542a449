"""What a learned route with the bundled router adds, for short and long prompts, through the gateway.

    python benchmarks/bench_long_prompts.py [--requests 600] [--out benchmarks/results/bench_long_prompts.json]

Three processes on loopback: the mock upstream (switchman.testing.FakeUpstream), `switchman serve`
(one worker) and bench_gateway's keep-alive load client, at concurrency 1. For each prompt size
(a short request; 4,000 cl100k tokens of real prompt text; that text repeated to 4 MB) the same body goes
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

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def prompt_of(tokens: int) -> str:
    """Real prompt text (RouterBench's and AlpacaEval's, joined) cut at about `tokens` cl100k tokens."""
    import csv
    import gzip

    from switchman._tokens import count_tokens

    texts: list[str] = []
    for name in ("routerbench", "alpacaeval2"):
        with gzip.open(DATA / name / "prompts.csv.gz", "rt", encoding="utf-8") as handle:
            texts += [row["prompt"] for row in csv.DictReader(handle)]
    text, size = "", 0
    while count_tokens(text[:size]) < tokens:
        text += texts[len(text) % len(texts)] + "\n\n"
        size = len(text)
        if count_tokens(text) > tokens:
            low, high = 0, len(text)
            while low < high:  # the longest prefix of at most `tokens` tokens
                mid = (low + high + 1) // 2
                low, high = (mid, high) if count_tokens(text[:mid]) <= tokens else (low, mid - 1)
            return text[:low]
    return text


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
        "server": {"ledger_url": f"sqlite:///{folder / 'ledger.sqlite3'}", "max_body_bytes": 8_000_000,
                   "limits": {"max_prompt_chars": 8_000_000, "keepalive_max_requests": 1_000_000}},
    }
    path = folder / "switchman.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def measure(up_port: int, gw_port: int, gw_pid: int, requests: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    four_k = prompt_of(4000)
    prompts = {"short": "Say hello to the benchmark, please.", "4k_tokens": four_k,
               "4mb": (four_k * (4_000_000 // len(four_k) + 1))[:4_000_000]}
    for label, total in (("short", requests), ("4k_tokens", requests), ("4mb", 100)):
        body = {"messages": [{"role": "user", "content": prompts[label]}], "max_tokens": 16}
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
                                str(config(up_port, folder)), "--port", str(gw_port), "--no-access-log"], env=env,
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
