"""Benchmark the prompt embedders: load time, RSS, single-prompt latency, batch throughput.

Each configuration runs in a fresh subprocess so load time and RSS are not polluted by the
ones before it. Latency is one ``embed([p])`` call per prompt (the request-path shape) over
500 real routing prompts, after warm-up, as wall time and as process CPU time (the latter is
robust to other load on a shared box; with 2 ORT threads it sums both threads); throughput is
the best of two ``embed(all)`` calls (the training shape).

    python benchmarks/bench_embedders.py --json results.json
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DATA = Path("/work/shared/data")
SOURCES = [DATA / "routerbench" / "prompts.csv.gz", DATA / "alpacaeval2" / "prompts.csv.gz"]
CONFIGS: list[tuple[str, int]] = [
    ("hashing", 1),
    ("wordllama-256", 1),
    ("wordllama-64", 1),
    *((f"minilm-int8:{mode}", threads) for mode in ("head_tail", "head", "tail") for threads in (1, 2)),
]


def load_prompts(n: int, seed: int = 0) -> list[str]:
    """A seeded sample of ``n`` prompts from whichever datasets are present."""
    prompts: list[str] = []
    for path in SOURCES:
        if path.exists():
            with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
                prompts.extend(row["prompt"] for row in csv.DictReader(f))
    if not prompts:
        sys.exit(f"no prompts found in {', '.join(map(str, SOURCES))}")
    return random.Random(seed).sample(prompts, min(n, len(prompts)))


def rss_mb() -> tuple[float, float]:
    """(current VmRSS, peak VmHWM) in MiB, from /proc/self/status."""
    vals: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            vals[key] = int(rest.split()[0]) / 1024
    return vals["VmRSS"], vals["VmHWM"]


def pct(sorted_vals: list[float], q: float) -> float:
    return sorted_vals[min(len(sorted_vals) - 1, round(q * (len(sorted_vals) - 1)))]


def run_one(name: str, threads: int, n: int) -> dict[str, Any]:
    """Measure one configuration in this process (called in a subprocess by main)."""
    import numpy as np

    from switchman.learn import get_embedder

    prompts = load_prompts(n)
    rss_before, _ = rss_mb()
    t0 = time.perf_counter()
    emb = get_embedder(name, threads=threads)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb.embed([prompts[0]])
    first_call_ms = (time.perf_counter() - t0) * 1e3
    rss_after_load, _ = rss_mb()

    for p in prompts[:20]:  # warm-up
        emb.embed([p])
    lat, cpu = [], []
    for p in prompts:
        c0, t0 = time.process_time_ns(), time.perf_counter_ns()
        emb.embed([p])
        lat.append((time.perf_counter_ns() - t0) / 1e6)
        cpu.append((time.process_time_ns() - c0) / 1e6)
    lat.sort()
    cpu.sort()

    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        vecs = emb.embed(prompts)
        best = min(best, time.perf_counter() - t0)
    assert vecs.shape == (len(prompts), emb.dim) and np.isfinite(vecs).all()
    rss_end, peak = rss_mb()

    out: dict[str, Any] = {
        "embedder": emb.name,
        "threads": threads,
        "dim": emb.dim,
        "n_prompts": len(prompts),
        "load_s": round(load_s, 4),
        "first_call_ms": round(first_call_ms, 3),
        "p50_ms": round(pct(lat, 0.50), 4),
        "p90_ms": round(pct(lat, 0.90), 4),
        "p99_ms": round(pct(lat, 0.99), 4),
        "max_ms": round(lat[-1], 4),
        # CPU time of the whole process (all ORT threads); robust to other load on the box
        "cpu_p50_ms": round(pct(cpu, 0.50), 4),
        "cpu_p99_ms": round(pct(cpu, 0.99), 4),
        "mean_ms": round(sum(lat) / len(lat), 4),
        "batch_prompts_per_s": round(len(prompts) / best, 1),
        "rss_before_load_mb": round(rss_before, 1),
        "rss_after_load_mb": round(rss_after_load, 1),
        "rss_end_mb": round(rss_end, 1),
        "peak_rss_mb": round(peak, 1),
        "loadavg_1m_end": round(os.getloadavg()[0], 2),  # >1 on this box means contention
    }
    tok = getattr(emb, "_tok", None)
    if name.startswith("minilm") and tok is not None:
        lengths = [len(e.ids) for e in tok.encode_batch(prompts, add_special_tokens=False)]
        out["share_over_254_tokens"] = round(sum(x > 254 for x in lengths) / len(lengths), 3)
        out["median_tokens"] = sorted(lengths)[len(lengths) // 2]
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = [
        ("embedder", "embedder"),
        ("threads", "thr"),
        ("dim", "dim"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("cpu_p50_ms", "cpu p50 ms"),
        ("batch_prompts_per_s", "batch /s"),
        ("load_s", "load s"),
        ("rss_after_load_mb", "RSS load MiB"),
        ("rss_before_load_mb", "RSS base MiB"),
        ("peak_rss_mb", "peak MiB"),
        ("loadavg_1m_end", "load1"),
    ]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(" | ".join(h for _, h in cols))
        for r in rows:
            print(" | ".join(str(r[k]) for k, _ in cols))
        return
    table = Table(title=f"Embedders: {rows[0]['n_prompts']} prompts, single-prompt embed([p]) latency")
    for _, h in cols:
        table.add_column(h, justify="left" if h == "embedder" else "right")
    for r in rows:
        table.add_row(*(str(r[k]) for k, _ in cols))
    Console(width=200).print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write results here")
    ap.add_argument("-n", type=int, default=500, help="number of prompts (default 500)")
    ap.add_argument("--only", nargs="*", help="embedder names to run (default: all configured)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one:  # child mode
        print(json.dumps(run_one(args.one, args.threads, args.n)))
        return

    from switchman.learn import available_embedders

    have = set(available_embedders())
    configs = [(n, t) for n, t in CONFIGS if (not args.only or n in args.only) and n in have]
    rows = []
    for name, threads in configs:
        cmd = [sys.executable, __file__, "--one", name, "--threads", str(threads), "-n", str(args.n)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{name} (threads={threads}) failed:\n{proc.stderr}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"done {name} threads={threads}", file=sys.stderr)
    if rows:
        print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu_count": _cpus(), "cpu_model": _cpu_model(), "results": rows}, indent=2))


def _cpus() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    simd = [f for f in ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]
    return f"{name} ({', '.join(simd)})"


if __name__ == "__main__":
    main()
