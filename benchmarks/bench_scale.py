"""Scale-out costs: gateway CPU per request with shared state on Redis vs in the process, and requests/s of
1, 2 and 4 workers behind one port.

    flock /work/notes/bench.lock python benchmarks/bench_scale.py [--requests 3000] [--baseline-rev main] \
        [--out benchmarks/results/bench_scale.json]

Processes: the fake upstream, a redis-server of the benchmark's own (no persistence), the gateways
(`switchman serve`) and this load client (bench_gateway's minimal keep-alive HTTP/1.1 client).

1. Redis on vs off, side by side: two one-worker gateways on one configuration, one with
   `--redis-url`, loaded in alternating rounds at concurrency 10. Two kinds of request: *plain*
   (no budget, limit or session applies: Redis is only pinged and health synced in the background)
   and *shared* (an agent with a budget and an rpm/tpm limit, in a session: a Lua budget
   reservation, a token-bucket admission, a session read and write and a background settle on
   every request). CPU ms per request of the gateway process from /proc (user + system); the
   redis-server's own CPU per request is reported apart.
2. `serve --workers N` for N = 1, 2, 4 at concurrency 50: requests/s, and CPU ms per request summed
   over the workers. On a machine with fewer cores than workers (and the client, the upstream and
   the other processes on the same cores) the gain flattens; the cores and load average are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from bench_gateway import KEY, WARMUP, cpu_seconds, free_port, http_request, run_load, wait_for_port
from bench_litellm import export_switchman

BODY = {"model": "auto", "messages": [{"role": "system", "content": "You are terse."},
                                      {"role": "user", "content": "Say hello to the benchmark, please."}],
        "max_tokens": 64}
SHARED_HEADERS = {"x-switchman-agent": "bench", "x-switchman-session": "bench-session"}


def config(upstream_port: int, folder: Path) -> Path:
    data = {
        "providers": {"mock": {"kind": "openai", "base_url": f"http://127.0.0.1:{upstream_port}/v1",
                               "api_key_env": "BENCH_UPSTREAM_KEY"}},
        "models": {"small": {"provider": "mock", "input_price": 0.1, "output_price": 0.2},
                   "large": {"provider": "mock", "input_price": 5.0, "output_price": 10.0}},
        "routes": {"default": {"candidates": ["small", "large"], "strategy": "cheapest"}},
        "default_route": "default",
        "agents": {"bench": {"rpm": 10_000_000, "tpm": 10_000_000_000}},
        "budgets": [{"scope": "agent", "name": "bench", "usd": 1_000_000.0, "period": "day"}],
        "server": {"ledger_url": f"sqlite:///{folder / 'ledger.sqlite3'}", "redis": {"timeout_s": 0.25}},
    }
    path = folder / "switchman.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def tree_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in [pid, *children(pid)] if Path(f"/proc/{p}").exists())


def serve(config_path: Path, folder: Path, name: str, env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from switchman.cli import app; app()", "serve", "--config", str(config_path),
         "--port", str(port), "--no-access-log", *args], env=env, stderr=(folder / f"{name}.log").open("wb"))
    wait_for_port(port, process)
    return process, port


async def measured(port: int, pid: int, raw: bytes, concurrency: int, total: int, redis_pid: int | None = None) -> dict[str, Any]:
    before, redis_before = tree_cpu(pid), cpu_seconds(redis_pid) if redis_pid else 0.0
    row = await run_load(port, raw, concurrency, total)
    count = total + WARMUP * concurrency  # warm-up calls count too
    row["cpu_ms_per_request"] = (tree_cpu(pid) - before) * 1000 / count
    if redis_pid:
        row["redis_cpu_ms_per_request"] = (cpu_seconds(redis_pid) - redis_before) * 1000 / count
    return row


async def redis_on_off(ports: dict[str, tuple[int, int]], redis_pid: int, total: int, rounds: int,
                       kinds: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for kind, headers in [(k, h) for k, h in (("plain", {}), ("shared", SHARED_HEADERS)) if k in kinds]:
        rows: dict[str, list[dict[str, Any]]] = {mode: [] for mode in ports}
        for _ in range(rounds):  # alternate, so all see the same machine
            for mode in ports:
                port, pid = ports[mode]
                raw = http_request("/v1/chat/completions", BODY, port, headers)
                rows[mode].append(await measured(port, pid, raw, 10, total, redis_pid if mode != "off" else None))
        results[kind] = rows
    return results


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of Redis off / on")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_scale.json"))
    parser.add_argument("--baseline-rev", default=None,
                        help="also measure, in the same rounds, a gateway with Redis from this git revision's src/ "
                             "(its own Redis database)")
    parser.add_argument("--kinds", default="plain,shared", help="the kinds of request of part 1 (comma-separated)")
    parser.add_argument("--skip-workers", action="store_true", help="measure part 1 only (Redis off vs on)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    env = {**os.environ, "BENCH_UPSTREAM_KEY": KEY}
    up_port, redis_port = free_port(), free_port()
    load_before = os.getloadavg()
    processes: list[subprocess.Popen[bytes]] = []
    upstream = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom switchman.testing import FakeUpstream\n"
         f"FakeUpstream(port={up_port}).start()\nwhile True: time.sleep(3600)"], env=env)
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)
    processes += [upstream, redis]
    results: dict[str, Any] = {}
    try:
        wait_for_port(up_port, upstream)
        wait_for_port(redis_port, redis)
        path = config(up_port, folder)
        off, off_port = serve(path, folder, "off", env)
        on, on_port = serve(path, folder, "on", env, "--redis-url", f"redis://127.0.0.1:{redis_port}/0")
        processes += [off, on]
        gateways = {"off": (off_port, off.pid), "on": (on_port, on.pid)}
        if args.baseline_rev is not None:
            base_sha, base_src = export_switchman(args.baseline_rev)
            results["baseline_commit"] = base_sha
            base_env = {**env, "PYTHONPATH": os.pathsep.join([str(base_src), *filter(None, [env.get("PYTHONPATH")])])}
            base, base_port = serve(path, folder, "base", base_env, "--redis-url", f"redis://127.0.0.1:{redis_port}/1")
            processes.append(base)
            gateways["base"] = (base_port, base.pid)
        kinds = [kind for kind in args.kinds.split(",") if kind]
        results["redis"] = asyncio.run(redis_on_off(gateways, redis.pid, args.requests, args.rounds, kinds))
        for process in [p for p in processes if p not in (upstream, redis)]:
            process.terminate()
            process.wait(60)
        results["workers"] = []
        for workers in () if args.skip_workers else (1, 2, 4):
            gateway, port = serve(path, folder, f"workers{workers}", env, "--workers", str(workers))
            processes.append(gateway)
            time.sleep(2.0 if workers > 1 else 0.0)  # every worker up, not only the first
            raw = http_request("/v1/chat/completions", BODY, port)
            row = asyncio.run(measured(port, gateway.pid, raw, 50, args.requests * 2))
            results["workers"].append({"workers": workers, **row})
            gateway.terminate()
            gateway.wait(60)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                process.wait(60)
    results["environment"] = {"python": sys.version.split()[0], "cpus": os.cpu_count(),
                              "requests_per_measurement": args.requests, "rounds": args.rounds,
                              "load_average_before": load_before, "load_average_after": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nwritten to {args.out}")


def print_table(results: dict[str, Any]) -> None:
    print("Redis off vs on, concurrency 10 (median of the rounds)")
    print(f"{'request':<8}{'redis':>6}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}{'redis-server ms/req':>21}")
    for kind, rows in results["redis"].items():
        for mode in rows:
            runs = rows[mode]
            redis_cpu = median([r["redis_cpu_ms_per_request"] for r in runs]) if mode != "off" else None
            print(f"{kind:<8}{mode:>6}{median([r['rps'] for r in runs]):>9.0f}{median([r['p50_ms'] for r in runs]):>9.2f}"
                  f"{median([r['p99_ms'] for r in runs]):>9.2f}{median([r['cpu_ms_per_request'] for r in runs]):>12.3f}"
                  f"{'' if redis_cpu is None else f'{redis_cpu:.3f}':>21}")
        for mode in [m for m in rows if m != "off"]:
            added = [on["cpu_ms_per_request"] - off["cpu_ms_per_request"]
                     for off, on in zip(rows["off"], rows[mode], strict=True)]
            label = "" if mode == "on" else f" ({mode}: {results.get('baseline_commit', '')[:12]})"
            print(f"{kind}: Redis adds {median(added):.3f} ms CPU per request in the gateway{label} (rounds: "
                  f"{', '.join(f'{a:.3f}' for a in added)})")
    if results["workers"]:
        print("\nserve --workers N, concurrency 50")
        print(f"{'workers':<8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}")
    for row in results["workers"]:
        print(f"{row['workers']:<8}{row['rps']:>9.0f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['cpu_ms_per_request']:>12.3f}")
    env = results["environment"]
    print(f"\n{env['cpus']} CPUs; load average before {env['load_average_before']}, after {env['load_average_after']}")


if __name__ == "__main__":
    main()
