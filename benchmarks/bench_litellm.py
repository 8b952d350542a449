"""switchman vs LiteLLM's proxy, side by side, in front of the same fast mock upstream on loopback.

    python benchmarks/bench_litellm.py --requests 2000 --repeats 3 --out benchmarks/results/bench_litellm.json

(run from the repository root with the project's virtualenv active). The first run creates
`runs/litellm-venv` (git-ignored) with `python -m venv` and `pip install 'litellm[proxy]'` from PyPI;
later runs reuse it (`--litellm-spec 'litellm[proxy]==X.Y.Z'` with a fresh `--litellm-venv` pins another
version). The LiteLLM version measured is printed and written to the JSON.

Processes, all on 127.0.0.1: the mock upstream (switchman.testing.FakeUpstream), `switchman serve`
(one worker, the static `cheapest` route), `litellm --config ... --num_workers 1` (one model pointed at
the same mock), and this load client (bench_gateway's minimal keep-alive HTTP/1.1 client). Both proxies
run at the same time, pinned to the same cores; they are measured one after the other. The request
bytes are identical for both proxies: the body says `"model": "auto"`, which is switchman's default
route and the one `model_name` LiteLLM is configured with; both send `"model": "small"` upstream.

For each repeat (3 by default; the order of the two proxies alternates between repeats) and each
concurrency (1, 10, 50): direct to the mock, then through each proxy; then streaming time to first
event at concurrency 1 the same way. Each measurement: WARMUP requests per connection, then
`--requests` requests split over the connections, stopped early at `--time-limit` seconds (a request
taking over `--request-timeout` counts as an error). Reported per proxy: requests/s, p50/p99 latency,
p50 added over direct, proxy CPU ms per request (utime+stime of the proxy's process tree from
/proc/<pid>/stat, over the measured requests only), resident memory (VmRSS, process tree) at the end;
and the ratios switchman/LiteLLM. The table shows medians over the repeats; every run is in the JSON.

LiteLLM is run with its defaults except (all recorded under "litellm.settings" in the JSON):
- environment `LITELLM_LOG=ERROR` (LiteLLM's production advice "turn off FastAPI's default info logs";
  it also silences uvicorn's per-request access log line: switchman writes none either),
  `LITELLM_TELEMETRY_DISABLED=true`, `LITELLM_LOCAL_MODEL_COST_MAP=True` (no network fetch of the
  price map at start; the bundled copy is used), and
  `LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY=true` (no master key, so no per-request auth:
  switchman without virtual keys has none either; both listen on 127.0.0.1 only);
- no database (no DATABASE_URL), and `general_settings: {disable_spend_logs: true,
  disable_error_logs: true}` (its production advice; without a database they write nothing anyway);
- CLI `--num_workers 1 --host 127.0.0.1 --port <free port>`;
- the one model: `model_name: auto`, `litellm_params: {model: openai/small, api_base: <mock>/v1, api_key: ...,
  input_cost_per_token: 1e-7, output_cost_per_token: 2e-7}` (the prices switchman's config gives `small`).
Its own cost calculation and proxy hooks stay on (switchman computes cost and writes a ledger row
per request too). The LiteLLM virtualenv is exactly what `pip install 'litellm[proxy]'` gives: notably
uvicorn there runs without httptools (pure-Python h11 parser), while switchman depends on httptools.

The switchman code measured is a clean export of `--switchman-rev` (default HEAD) under runs/, put first
on PYTHONPATH for the mock and the gateway, so uncommitted edits in the work tree are not measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import (
    BODY,
    KEY,
    WARMUP,
    Connection,
    free_port,
    gateway_config,
    http_request,
)

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 10, 50)
PROXIES = ("switchman", "litellm")
LITELLM_ENV = {
    "LITELLM_LOG": "ERROR",
    "LITELLM_TELEMETRY_DISABLED": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
}
LITELLM_GENERAL_SETTINGS = {"disable_spend_logs": True, "disable_error_logs": True}


# -- processes ------------------------------------------------------------------------------------

def tree_pids(pid: int) -> list[int]:
    """pid and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of the process tree (every thread of every process)."""
    ticks = 0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_memory_mib(pid: int) -> dict[str, float]:
    """VmRSS of the main process, of the whole tree, and the main process's peak (VmHWM)."""
    def status(p: int, key: str) -> float:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0
    pids = tree_pids(pid)
    return {"rss_mib": status(pid, "VmRSS"), "tree_rss_mib": sum(status(p, "VmRSS") for p in pids),
            "peak_rss_mib": status(pid, "VmHWM"), "processes": len(pids)}


def wait_ready(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 180.0) -> None:
    """Until a non-stream completion through this server answers 200."""
    deadline = time.monotonic() + timeout
    body = json.dumps(BODY).encode()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}; see {log}:\n{log.read_text()[-3000:]}")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                if answer.status == 200 and json.loads(answer.read())["choices"]:
                    return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"port {port} not ready after {timeout:.0f}s; see {log}")


def litellm_venv(venv: Path, spec: str) -> dict[str, Any]:
    """Create the LiteLLM virtualenv if needed; its versions."""
    python = venv / "bin" / "python"
    if not (venv / "bin" / "litellm").exists():
        print(f"creating {venv} and installing {spec!r} (takes a few minutes)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", spec], check=True)
    probe = ("import importlib.metadata as m, importlib.util as u, json, sys\n"
             "print(json.dumps({'litellm': m.version('litellm'), 'uvicorn': m.version('uvicorn'),"
             " 'python': sys.version.split()[0], 'uvloop': bool(u.find_spec('uvloop')),"
             " 'httptools': bool(u.find_spec('httptools'))}))")
    return json.loads(subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True).stdout)


def export_switchman(rev: str) -> tuple[str, Path]:
    """A clean copy of src/ at `rev` under runs/ (reused when present)."""
    sha = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    target = ROOT / "runs" / f"switchman-{sha[:12]}"
    if not (target / "src" / "switchman").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "src"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return sha, target / "src"


# -- load -----------------------------------------------------------------------------------------

async def run_load(port: int, raw: bytes, concurrency: int, total: int, *, pid: int | None, stream: bool,
                   time_limit: float, request_timeout: float) -> dict[str, Any]:
    """WARMUP requests per connection, then `total` requests over `concurrency` keep-alive connections.

    Bounded: stops issuing at `time_limit` s; a request over `request_timeout` s is an error (and its
    connection is replaced). CPU of `pid`'s tree is taken over the measured phase only.
    """
    connections = [await Connection.open(port) for _ in range(concurrency)]
    latencies: list[float] = []
    errors: list[str] = []

    async def one(index: int) -> float | None:
        conn = connections[index]
        try:
            return await asyncio.wait_for(conn.stream(raw) if stream else conn.call(raw), request_timeout)
        except (OSError, RuntimeError, ValueError, asyncio.IncompleteReadError, TimeoutError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            conn.close()
            connections[index] = await Connection.open(port)
            return None

    async def warm(index: int) -> None:
        for _ in range(WARMUP):
            await one(index)

    async def worker(index: int, count: int, deadline: float) -> None:
        for _ in range(count):
            if time.perf_counter() > deadline:
                return
            latency = await one(index)
            if latency is not None:
                latencies.append(latency)

    await asyncio.gather(*(warm(i) for i in range(concurrency)))
    warm_errors = len(errors)
    cpu_before = tree_cpu_seconds(pid) if pid else 0.0
    started = time.perf_counter()
    per_connection = total // concurrency
    await asyncio.gather(*(worker(i, per_connection, started + time_limit) for i in range(concurrency)))
    wall = time.perf_counter() - started
    cpu = tree_cpu_seconds(pid) - cpu_before if pid else None
    for conn in connections:
        conn.close()
    latencies.sort()
    n = len(latencies)
    row: dict[str, Any] = {
        "concurrency": concurrency, "requests": n, "errors": len(errors), "warmup_errors": warm_errors,
        "stopped_by_time_limit": n + len(errors) - warm_errors < per_connection * concurrency,
        "p50_ms": statistics.median(latencies) * 1000 if n else float("nan"),
        "p99_ms": latencies[max(int(n * 0.99) - 1, 0)] * 1000 if n else float("nan"),
        "rps": n / wall, "wall_s": wall,
    }
    if cpu is not None:
        row["cpu_ms_per_request"] = cpu * 1000 / max(n, 1)
    if errors:
        row["first_errors"] = sorted(set(errors))[:3]
    return row


# -- the run --------------------------------------------------------------------------------------

def litellm_config(up_port: int, folder: Path) -> Path:
    data = {
        "model_list": [{"model_name": "auto", "litellm_params": {
            "model": "openai/small", "api_base": f"http://127.0.0.1:{up_port}/v1", "api_key": KEY,
            # the price switchman's config gives `small` (USD 0.1 / 0.2 per million tokens): both compute a cost
            "input_cost_per_token": 0.1e-6, "output_cost_per_token": 0.2e-6}}],
        "general_settings": LITELLM_GENERAL_SETTINGS,
    }
    path = folder / "litellm.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def measure(ports: dict[str, int], pids: dict[str, int], args: argparse.Namespace) -> list[dict[str, Any]]:
    direct = http_request("/v1/chat/completions", {**BODY, "model": "small"}, ports["direct"],
                          {"authorization": f"Bearer {KEY}"})
    direct_stream = http_request("/v1/chat/completions", {**BODY, "model": "small", "stream": True}, ports["direct"],
                                 {"authorization": f"Bearer {KEY}"})
    raws = {name: http_request("/v1/chat/completions", BODY, ports[name]) for name in PROXIES}
    stream_raws = {name: http_request("/v1/chat/completions", {**BODY, "stream": True}, ports[name]) for name in PROXIES}
    limits = {"time_limit": args.time_limit, "request_timeout": args.request_timeout}
    runs = []
    for repeat in range(args.repeats):
        order = PROXIES if repeat % 2 == 0 else PROXIES[::-1]
        run: dict[str, Any] = {"repeat": repeat + 1, "order": list(order), "loadavg_before": os.getloadavg(),
                               "nonstream": {"direct": [], **{name: [] for name in PROXIES}}, "stream": {}}
        for concurrency in CONCURRENCY:
            row = await run_load(ports["direct"], direct, concurrency, args.requests, pid=pids["direct"],
                                 stream=False, **limits)
            run["nonstream"]["direct"].append(row)
            print(f"  repeat {repeat + 1} c={concurrency:<3} direct     {row['rps']:8.0f} req/s  p50 {row['p50_ms']:.3f} ms",
                  flush=True)
            for name in order:
                row = await run_load(ports[name], raws[name], concurrency, args.requests, pid=pids[name],
                                     stream=False, **limits)
                run["nonstream"][name].append(row)
                print(f"  repeat {repeat + 1} c={concurrency:<3} {name:<10} {row['rps']:8.0f} req/s  "
                      f"p50 {row['p50_ms']:.3f} ms  CPU {row['cpu_ms_per_request']:.3f} ms/req  errors {row['errors']}",
                      flush=True)
        stream_total = max(args.requests // 2, 1)
        run["stream"]["direct"] = await run_load(ports["direct"], direct_stream, 1, stream_total, pid=pids["direct"],
                                                 stream=True, **limits)
        for name in order:
            run["stream"][name] = await run_load(ports[name], stream_raws[name], 1, stream_total, pid=pids[name],
                                                 stream=True, **limits)
        print(f"  repeat {repeat + 1} stream TTFT p50: "
              + ", ".join(f"{k} {v['p50_ms']:.3f} ms" for k, v in run["stream"].items()), flush=True)
        run["memory"] = {name: tree_memory_mib(pids[name]) for name in PROXIES}
        run["loadavg_after"] = os.getloadavg()
        runs.append(run)
    return runs


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats, per path, concurrency and metric; added latency and ratios from them."""
    def med(values: list[float]) -> float:
        return statistics.median(values)

    keys = ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request")
    summary: dict[str, Any] = {"nonstream": {}, "stream": {}, "memory": {}, "ratios": {}}
    for path in ("direct", *PROXIES):
        rows = []
        for i, concurrency in enumerate(CONCURRENCY):
            row: dict[str, Any] = {"concurrency": concurrency}
            for key in keys:
                values = [run["nonstream"][path][i][key] for run in runs if key in run["nonstream"][path][i]]
                if values:
                    row[key] = med(values)
            if path != "direct":
                row["added_p50_ms"] = med([run["nonstream"][path][i]["p50_ms"] - run["nonstream"]["direct"][i]["p50_ms"]
                                           for run in runs])
            row["errors"] = sum(run["nonstream"][path][i]["errors"] for run in runs)
            rows.append(row)
        summary["nonstream"][path] = rows
        stream: dict[str, Any] = {key: med([run["stream"][path][key] for run in runs]) for key in ("p50_ms", "p99_ms")}
        if path != "direct":
            stream["added_p50_ms"] = med([run["stream"][path]["p50_ms"] - run["stream"]["direct"]["p50_ms"]
                                          for run in runs])
            stream["cpu_ms_per_request"] = med([run["stream"][path]["cpu_ms_per_request"] for run in runs])
        stream["errors"] = sum(run["stream"][path]["errors"] for run in runs)
        summary["stream"][path] = stream
    for name in PROXIES:
        summary["memory"][name] = {key: med([run["memory"][name][key] for run in runs])
                                   for key in ("rss_mib", "tree_rss_mib", "peak_rss_mib")}
    sw, ll = summary["nonstream"]["switchman"], summary["nonstream"]["litellm"]
    summary["ratios"] = {
        "rps_switchman_over_litellm": {c: s["rps"] / lt["rps"] for c, s, lt in zip(CONCURRENCY, sw, ll, strict=True)},
        "cpu_litellm_over_switchman": {c: lt["cpu_ms_per_request"] / s["cpu_ms_per_request"]
                                       for c, s, lt in zip(CONCURRENCY, sw, ll, strict=True)},
        "added_p50_litellm_over_switchman_c1": ll[0]["added_p50_ms"] / sw[0]["added_p50_ms"],
        "rss_litellm_over_switchman": summary["memory"]["litellm"]["rss_mib"] / summary["memory"]["switchman"]["rss_mib"],
    }
    return summary


def markdown(results: dict[str, Any]) -> str:
    s = results["summary"]
    names = {"direct": "direct to mock", "switchman": "switchman (static route)", "litellm": "LiteLLM proxy"}
    lines = [(f"switchman {results['switchman']['commit'][:12]} vs LiteLLM {results['litellm']['versions']['litellm']}; "
             f"median of {results['environment']['repeats']} alternating repeats, "
             f"{results['environment']['requests_per_measurement']} requests per measurement, 1 worker each, "
             f"cores {results['environment']['proxy_cpus']}; 1-min load average "
             f"{min(r['loadavg_before'][0] for r in results['runs']):.1f}-"
             f"{max(r['loadavg_after'][0] for r in results['runs']):.1f}"), "",
             "| concurrency | path | req/s | p50 ms | p99 ms | added p50 ms | proxy CPU ms/req |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for i, concurrency in enumerate(CONCURRENCY):
        for path in ("direct", *PROXIES):
            row = s["nonstream"][path][i]
            added = f"{row['added_p50_ms']:.3f}" if "added_p50_ms" in row else ""
            cpu = f"{row['cpu_ms_per_request']:.3f}" if path != "direct" else ""
            lines.append(f"| {concurrency} | {names[path]} | {row['rps']:.0f} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} "
                         f"| {added} | {cpu} |")
    lines += ["", "| streaming, concurrency 1 | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms | proxy CPU ms/req |",
              "|---|---:|---:|---:|---:|"]
    for path in ("direct", *PROXIES):
        row = s["stream"][path]
        added = f"{row['added_p50_ms']:.3f}" if "added_p50_ms" in row else ""
        cpu = f"{row['cpu_ms_per_request']:.3f}" if "cpu_ms_per_request" in row else ""
        lines.append(f"| {names[path]} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | {added} | {cpu} |")
    r = s["ratios"]
    lines += ["", "| ratio | c=1 | c=10 | c=50 |", "|---|---:|---:|---:|",
              "| req/s switchman / LiteLLM | " + " | ".join(f"{r['rps_switchman_over_litellm'][c]:.1f}x"
                                                          for c in CONCURRENCY) + " |",
              "| CPU per request LiteLLM / switchman | " + " | ".join(f"{r['cpu_litellm_over_switchman'][c]:.1f}x"
                                                                     for c in CONCURRENCY) + " |",
              "", "| resident memory (end of run) | RSS MiB | peak RSS MiB |", "|---|---:|---:|"]
    for name in PROXIES:
        m = s["memory"][name]
        lines.append(f"| {names[name]} | {m['rss_mib']:.0f} | {m['peak_rss_mib']:.0f} |")
    errors = {p: sum(row["errors"] for row in s["nonstream"][p]) + s["stream"][p]["errors"] for p in ("direct", *PROXIES)}
    lines += ["", f"errors (all repeats): {errors}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats (medians reported)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per measurement at most")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="seconds per request at most")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_litellm.json"))
    parser.add_argument("--litellm-venv", type=Path, default=ROOT / "runs" / "litellm-venv")
    parser.add_argument("--litellm-spec", default="litellm[proxy]", help="pip requirement for the LiteLLM venv")
    parser.add_argument("--switchman-rev", default="HEAD", help="git revision of switchman to measure")
    parser.add_argument("--cpus", default=None, help="cores for both proxies, e.g. 0,1 (default: all)")
    args = parser.parse_args()

    args.litellm_venv = args.litellm_venv.resolve()
    cpus = sorted(int(c) for c in args.cpus.split(",")) if args.cpus else sorted(os.sched_getaffinity(0))
    versions = litellm_venv(args.litellm_venv, args.litellm_spec)
    print(f"LiteLLM {versions['litellm']} (uvicorn {versions['uvicorn']}, httptools {versions['httptools']}, "
          f"uvloop {versions['uvloop']}, Python {versions['python']})", flush=True)
    sha, src = export_switchman(args.switchman_rev)
    print(f"switchman {sha[:12]} from {src}", flush=True)

    folder = Path(tempfile.mkdtemp(prefix="bench-litellm-"))
    env = {**os.environ, "BENCH_UPSTREAM_KEY": KEY, "PYTHONPATH": os.pathsep.join(
        [str(src), *filter(None, [os.environ.get("PYTHONPATH")])])}
    ports = {"direct": free_port(), "switchman": free_port(), "litellm": free_port()}
    logs = {name: folder / f"{name}.log" for name in ports}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        processes["direct"] = subprocess.Popen(
            [sys.executable, "-c", ("import time\nfrom switchman.testing import FakeUpstream\n"
             f"FakeUpstream(port={ports['direct']}).start()\nwhile True: time.sleep(3600)")],
            env=env, stdout=logs["direct"].open("wb"), stderr=subprocess.STDOUT)
        processes["switchman"] = subprocess.Popen(
            [sys.executable, "-c", "from switchman.cli import app; app()", "serve",
             "--config", str(gateway_config(ports["direct"], folder, None)), "--port", str(ports["switchman"])],
            env=env, stdout=logs["switchman"].open("wb"), stderr=subprocess.STDOUT)
        litellm_cmd = [str(args.litellm_venv / "bin" / "litellm"), "--config", str(litellm_config(ports["direct"], folder)),
                       "--host", "127.0.0.1", "--port", str(ports["litellm"]), "--num_workers", "1"]
        ll_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DATABASE_URL")}
        processes["litellm"] = subprocess.Popen(litellm_cmd, env={**ll_env, **LITELLM_ENV}, cwd=folder,
                                                stdout=logs["litellm"].open("wb"), stderr=subprocess.STDOUT)
        for name in ("switchman", "litellm"):
            os.sched_setaffinity(processes[name].pid, cpus)
        for name in ("direct", "switchman", "litellm"):
            wait_ready(ports[name], processes[name], logs[name])
        for name in ("switchman", "litellm"):  # threads started since inherit it, but set it on all to be sure
            for pid in tree_pids(processes[name].pid):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    os.sched_setaffinity(int(tid), cpus)
        pids = {name: process.pid for name, process in processes.items()}
        print(f"ready: mock :{ports['direct']}, switchman :{ports['switchman']}, LiteLLM :{ports['litellm']}", flush=True)
        runs = asyncio.run(measure(ports, pids, args))
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()

    results: dict[str, Any] = {
        "command": shlex.join(["python", *sys.argv]),
        "switchman": {"commit": sha, "workers": 1, "route": "static (cheapest)", "command": "switchman serve"},
        "litellm": {"versions": versions, "command": " ".join(litellm_cmd[1:]).replace(str(folder), "<tmp>"),
                    "settings": {"environment": LITELLM_ENV, "general_settings": LITELLM_GENERAL_SETTINGS,
                                 "database": None, "num_workers": 1,
                                 "model": {"model_name": "auto", "litellm_params.model": "openai/small",
                                           "input_cost_per_token": 0.1e-6, "output_cost_per_token": 0.2e-6}},
                    "spec": args.litellm_spec},
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(), "proxy_cpus": cpus,
                        "cpu_model": cpu_model(), "requests_per_measurement": args.requests,
                        "warmup_per_connection": WARMUP, "repeats": args.repeats, "time_limit_s": args.time_limit},
        "summary": summarize(runs),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    table = markdown(results)
    args.out.with_suffix(".md").write_text(f"Command: `{results['command']}`\n\n{table}\n")
    print()
    print(table)
    print(f"\nwritten to {args.out} and {args.out.with_suffix('.md')}")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
