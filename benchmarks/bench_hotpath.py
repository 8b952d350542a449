"""The gateway's hot path against the floor: switchman's static route vs a minimal aiohttp proxy, side by side.

    python benchmarks/bench_hotpath.py --requests 4000 --repeats 2 --out benchmarks/results/bench_hotpath.json
    python benchmarks/bench_hotpath.py ... --py-spy /path/to/py-spy   # and a profile of switchman at c=10
    python benchmarks/bench_hotpath.py ... --baseline-rev main          # an older switchman in the same run

(run from the repository root with the project's virtualenv active). Processes, all on 127.0.0.1: the
mock upstream (switchman.testing.FakeUpstream), `switchman serve` (one worker, the static `cheapest`
route, its defaults: access log on, SQLite ledger), the minimal proxy (benchmarks/minimal_proxy.py:
aiohttp server + client, one JSON round trip, nothing else) and this load client (bench_gateway's
keep-alive HTTP/1.1 client). Both proxies run at the same time and are measured one after the other,
the order alternating between repeats, at concurrency 10: non-stream (latency = whole answer) and
stream (latency = time to the first event; the rest of the stream is read too). Per proxy: CPU ms per
request (utime + stime of its process tree, all threads, measured requests only), requests/s,
p50 / p99, and the 1-minute load average around each repeat; the table gives each repeat, so the
spread is visible.

With `--py-spy` (a py-spy binary; it is not a project dependency), switchman is then sampled at
concurrency 10 non-stream (py-spy record --nonblocking, idle threads excluded) and the samples are
put in buckets by the deepest frame that names one (`RULES`), written to the JSON and the table (py-spy's
raw stacks stay in the run's temporary folder, printed at the end).

The switchman code measured is a clean export of `--switchman-rev` (default HEAD) under runs/; with
`--baseline-rev`, a second `switchman serve` from that revision (its own ledger file) is measured in
the same run, in the same alternation, so before and after meet the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import BODY, KEY, free_port, gateway_config, http_request
from bench_litellm import export_switchman, run_load, wait_ready

ROOT = Path(__file__).resolve().parent.parent
PROXIES = ("switchman", "minimal")
CONCURRENCY = 10

#: Profile buckets. Threads other than the event loop's go by a frame anywhere in their stack; an
#: event-loop sample goes by its deepest frame that a rule names, `(bucket, path fragment, functions
#: or None for any)`; a sample with none of those is the event loop's own ("HTTP server and ASGI stack").
THREADS: tuple[tuple[str, str, str], ...] = (
    ("ledger writer thread", "switchman/ledger/_ledger.py", "_run"),
    ("other threads", "threading.py", "_bootstrap"),
)
SERVER = "HTTP server and ASGI stack"
MIDDLEWARE = "middlewares (access log, limits, auth, request id)"
DECIDING = frozenset({"_decide_core", "_steered", "decide", "adecide", "_begin", "_abegin", "_reserve"})
RULES: tuple[tuple[str, str, frozenset[str] | None], ...] = (
    ("request id", "_request_id.py", None),
    ("request id", "/uuid.py", None),
    (MIDDLEWARE, "gateway/_middleware/", None),
    ("upstream client", "aiohttp/", None),
    ("upstream client", "gateway/_http.py", None),
    ("upstream client", "gateway/_transport.py", None),
    ("upstream client", "_dispatcher.py", frozenset({"_call"})),
    ("finishing and metrics", "_dispatcher.py", frozenset({"finish"})),
    ("finishing and metrics", "switchman/ledger/", None),
    ("finishing and metrics", "gateway/_shadow.py", None),
    ("finishing and metrics", "gateway/_exchange.py", None),
    ("finishing and metrics", "gateway/_sessions.py", None),
    ("decision", "_dispatcher.py", DECIDING),
    ("decision", "gateway/_admission.py", DECIDING),
    ("decision", "switchman/_decider.py", None),
    ("decision", "switchman/_tokens.py", None),
    ("decision", "switchman/routing/", None),
    ("request parsing and validation", "gateway/_endpoints.py", frozenset({"read_request"})),
    ("request parsing and validation", "gateway/_schema.py", None),
    ("request parsing and validation", "gateway/_context.py", None),
    (SERVER, "gateway/_server.py", None),  # the guarded HTTP protocol and its writes
    ("dispatch (attempts, balancer, response)", "switchman/", None),
    (SERVER, "uvicorn/", None),
    (SERVER, "starlette/", None),
)


def _matches(frame: str, fragment: str, functions: frozenset[str] | None) -> bool:
    func, _, where = frame.partition(" (")
    return fragment in where and (functions is None or func.rpartition(".")[2] in functions)


def bucket_of(frames: list[str]) -> str:
    """The bucket of one stack (root first, as py-spy's raw format writes it)."""
    for name, fragment, function in THREADS:
        if any(_matches(frame, fragment, frozenset({function})) for frame in frames):
            return name
    for frame in reversed(frames):
        for name, fragment, functions in RULES:
            if _matches(frame, fragment, functions):
                return name
    return SERVER


def profile_buckets(raw: Path) -> dict[str, Any]:
    """Shares of py-spy's samples by bucket, and the 25 hottest leaf functions."""
    buckets: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        buckets[bucket_of(frames)] += int(count)
        leaves[frames[-1]] += int(count)
    total = sum(buckets.values()) or 1
    return {"samples": total, "buckets": {k: round(100.0 * v / total, 1) for k, v in buckets.most_common()},
            "top_leaves": {k: round(100.0 * v / total, 1) for k, v in leaves.most_common(25)}}


async def measure(ports: dict[str, int], pids: dict[str, int], args: argparse.Namespace,
                  proxies: tuple[str, ...]) -> list[dict[str, Any]]:
    raws = {name: http_request("/v1/chat/completions", BODY, ports[name]) for name in proxies}
    stream_raws = {name: http_request("/v1/chat/completions", {**BODY, "stream": True}, ports[name]) for name in proxies}
    limits = {"time_limit": args.time_limit, "request_timeout": 30.0}
    runs = []
    for repeat in range(args.repeats):
        order = proxies if repeat % 2 == 0 else proxies[::-1]
        run: dict[str, Any] = {"repeat": repeat + 1, "order": list(order), "loadavg_before": os.getloadavg(),
                               "nonstream": {}, "stream": {}}
        for kind, requests in (("nonstream", raws), ("stream", stream_raws)):
            for name in order:
                row = await run_load(ports[name], requests[name], CONCURRENCY, args.requests, pid=pids[name],
                                     stream=kind == "stream", **limits)
                run[kind][name] = row
                print(f"  repeat {repeat + 1} {kind:<9} {name:<10} {row['rps']:7.0f} req/s  p50 {row['p50_ms']:6.2f} ms  "
                      f"p99 {row['p99_ms']:6.2f} ms  CPU {row['cpu_ms_per_request']:.3f} ms/req  errors {row['errors']}",
                      flush=True)
        run["loadavg_after"] = os.getloadavg()
        runs.append(run)
    return runs


async def profile(port: int, pid: int, py_spy: Path, out: Path, requests: int, *, stream: bool) -> dict[str, Any]:
    """py-spy over switchman while it serves `requests` requests at concurrency 10."""
    raw = http_request("/v1/chat/completions", {**BODY, "stream": True} if stream else BODY, port)
    spy = subprocess.Popen([str(py_spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
                            "--nonblocking", "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    await asyncio.sleep(1.0)  # py-spy attached
    row = await run_load(port, raw, CONCURRENCY, requests, pid=pid, stream=stream, time_limit=120.0,
                         request_timeout=30.0)
    spy.send_signal(signal.SIGINT)
    spy.wait(60)
    result = profile_buckets(out)
    result["load"] = row
    return result


def ratio_table(runs: list[dict[str, Any]], proxies: tuple[str, ...]) -> list[str]:
    lines = ["| repeat | kind | proxy | CPU ms/req | req/s | p50 ms | p99 ms | load avg (1 min) |",
             "|---:|---|---|---:|---:|---:|---:|---|"]
    for run in runs:
        load = f"{run['loadavg_before'][0]:.1f} -> {run['loadavg_after'][0]:.1f}"
        for kind in ("nonstream", "stream"):
            for name in proxies:
                row = run[kind][name]
                lines.append(f"| {run['repeat']} | {kind} | {name} | {row['cpu_ms_per_request']:.3f} | {row['rps']:.0f} "
                             f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {load} |")
    lines += ["", "| repeat | kind | switchman | CPU/request vs minimal | p99 vs minimal |", "|---:|---|---|---:|---:|"]
    for run in runs:
        for kind in ("nonstream", "stream"):
            mp = run[kind]["minimal"]
            for name in proxies:
                if name != "minimal":
                    sw = run[kind][name]
                    lines.append(f"| {run['repeat']} | {kind} | {name} "
                                 f"| {sw['cpu_ms_per_request'] / mp['cpu_ms_per_request']:.2f}x "
                                 f"| {sw['p99_ms'] / mp['p99_ms']:.2f}x |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    base = results.get("baseline_commit")
    lines = [f"switchman {results['switchman_commit'][:12]}" + (f", switchman-base {base[:12]}" if base else "")
             + f"; concurrency {CONCURRENCY}; {results['requests']} measured requests per row; "
             "stream latency = time to first event", "",
             *ratio_table(results["runs"], tuple(results["runs"][0]["nonstream"]))]
    for kind, prof in results.get("profile", {}).items():
        lines += ["", f"Profile of {kind}, concurrency 10 ({prof['samples']} py-spy samples, "
                  f"{prof['load']['rps']:.0f} req/s while sampled):", "", "| bucket | share of samples |", "|---|---:|"]
        lines += [f"| {name} | {share:.1f}% |" for name, share in prof["buckets"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="measured requests per row")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats (each reported)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per row at most")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_hotpath.json"))
    parser.add_argument("--switchman-rev", default="HEAD", help="git revision of switchman to measure")
    parser.add_argument("--baseline-rev", default=None,
                        help="another revision, served too as switchman-base and measured in the same run")
    parser.add_argument("--py-spy", type=Path, default=None, help="a py-spy binary: also profile switchman")
    parser.add_argument("--profile-requests", type=int, default=6000)
    args = parser.parse_args()

    sha, src = export_switchman(args.switchman_rev)
    print(f"switchman {sha[:12]} from {src}", flush=True)
    proxies: tuple[str, ...] = PROXIES
    folder = Path(tempfile.mkdtemp(prefix="bench-hotpath-"))

    def environment(code: Path) -> dict[str, str]:
        return {**os.environ, "BENCH_UPSTREAM_KEY": KEY,
                "PYTHONPATH": os.pathsep.join([str(code), *filter(None, [os.environ.get("PYTHONPATH")])])}

    env = environment(src)
    ports = {"direct": free_port(), "switchman": free_port(), "minimal": free_port()}
    envs = {name: env for name in ports}
    base_sha = None
    if args.baseline_rev is not None:
        base_sha, base_src = export_switchman(args.baseline_rev)
        print(f"switchman-base {base_sha[:12]} from {base_src}", flush=True)
        proxies = ("switchman", "switchman-base", "minimal")
        ports["switchman-base"] = free_port()
        envs["switchman-base"] = environment(base_src)
    logs = {name: folder / f"{name}.log" for name in ports}
    commands = {
        "direct": [sys.executable, "-c", ("import time\nfrom switchman.testing import FakeUpstream\n"
                                          f"FakeUpstream(port={ports['direct']}).start()\nwhile True: time.sleep(3600)")],
        "switchman": [sys.executable, "-c", "from switchman.cli import app; app()", "serve",
                      "--config", str(gateway_config(ports["direct"], folder, None)), "--port", str(ports["switchman"])],
        "minimal": [sys.executable, str(ROOT / "benchmarks" / "minimal_proxy.py"), "--port", str(ports["minimal"]),
                    "--upstream", f"http://127.0.0.1:{ports['direct']}/v1", "--model", "small"],
    }
    if base_sha is not None:
        (folder / "base").mkdir()  # its own configuration and ledger file
        commands["switchman-base"] = [sys.executable, "-c", "from switchman.cli import app; app()", "serve",
                                      "--config", str(gateway_config(ports["direct"], folder / "base", None)),
                                      "--port", str(ports["switchman-base"])]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            processes[name] = subprocess.Popen(command, env=envs[name], stdout=logs[name].open("wb"), stderr=subprocess.STDOUT)
        for name in ports:
            wait_ready(ports[name], processes[name], logs[name])
        pids = {name: process.pid for name, process in processes.items()}
        runs = asyncio.run(measure(ports, pids, args, proxies))
        profiles = {}
        if args.py_spy is not None:
            for name in proxies[:-1]:
                for kind in ("nonstream", "stream"):
                    profiles[f"{name} {kind}"] = asyncio.run(profile(
                        ports[name], pids[name], args.py_spy, folder / f"pyspy-{name}-{kind}.txt",
                        args.profile_requests, stream=kind == "stream"))
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    results: dict[str, Any] = {"command": shlex.join(["python", *sys.argv]), "switchman_commit": sha,
                               "requests": args.requests, "concurrency": CONCURRENCY, "cpus": os.cpu_count(),
                               "python": sys.version.split()[0], "runs": runs}
    if base_sha is not None:
        results["baseline_commit"] = base_sha
    if profiles:
        results["profile"] = profiles
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    table = markdown(results)
    args.out.with_suffix(".md").write_text(f"Command: `{results['command']}`\n\n{table}\n")
    print()
    print(table)
    for kind, prof in profiles.items():
        print(f"\nhottest leaves, {kind}:")
        for leaf, share in prof["top_leaves"].items():
            print(f"  {share:5.1f}%  {leaf}")
    print(f"\nwritten to {args.out} and {args.out.with_suffix('.md')}; processes' logs and raw profiles in {folder}")


if __name__ == "__main__":
    main()
