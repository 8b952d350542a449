"""Learned-decision latency, router load time and resident memory.

    python benchmarks/bench_decision.py --router runs/rb.safetensors [--n 1000] [--json out.json]

Measures, in one fresh process (wall and CPU time, since a loaded machine inflates wall time): the time to load the router file and its embedder, RSS after
loading, and p50/p99 of `Router.route()` for a learned route — one full decision including the
prompt's token count and embedding — over real prompts from ../shared/data (or synthetic ones).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prompts(n: int) -> list[str]:
    import csv
    import gzip

    prompts: list[str] = []
    for name in ("routerbench", "alpacaeval2"):
        path = DATA / name / "prompts.csv.gz"
        if path.exists():
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                prompts += [row["prompt"] for row in csv.DictReader(handle)]
    if not prompts:
        prompts = [f"Write a function number {i} that sorts a list of integers." for i in range(200)]
    return (prompts * (n // len(prompts) + 1))[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--router", type=Path, required=True)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import numpy  # noqa: F401  (load BLAS first: the limit applies to libraries already loaded)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")  # as `switchman` itself does (see switchman.cli._app._process_setup)

    rss_start = _rss_mib()
    started = time.perf_counter()
    from switchman import Router
    from switchman.learn import TrainedRouter

    import_s = time.perf_counter() - started
    started = time.perf_counter()
    trained = TrainedRouter.load(args.router)
    load_router_s = time.perf_counter() - started
    config = {
        "models": {m: {"provider": "bench", "input_price": p[0], "output_price": p[1]}
                   for m, p in trained.prices.items()},
        "routes": {"default": {"candidates": list(trained.models), "strategy": "learned",
                               "router": str(args.router.resolve())}},
    }
    started = time.perf_counter()
    router = Router.from_dict(config)
    router.warm_up()
    load_all_s = time.perf_counter() - started
    rss_loaded = _rss_mib()

    prompts = _prompts(args.n)
    for p in prompts[:50]:
        router.route(p)
    times, cpu = [], []
    for p in prompts:
        t0, c0 = time.perf_counter(), time.process_time()
        router.route(p)
        cpu.append((time.process_time() - c0) * 1000)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    cpu.sort()
    load = Path("/proc/loadavg").read_text().split()[0]
    result = {
        "router": str(args.router),
        "embedder": trained.embedder,
        "algorithm": trained.algorithm,
        "n_training_prompts": trained.summary.get("n_prompts"),
        "n_models": len(trained.models),
        "decisions": len(times),
        "decision_ms_p50": statistics.median(times),
        "decision_ms_p99": times[int(0.99 * (len(times) - 1))],
        "decision_cpu_ms_p50": statistics.median(cpu),
        "decision_cpu_ms_p99": cpu[int(0.99 * (len(cpu) - 1))],
        "load_average_1m": float(load),
        "import_s": import_s,
        "router_file_load_s": load_router_s,
        "router_and_embedder_load_s": load_all_s,
        "rss_mib_before": rss_start,
        "rss_mib_loaded": rss_loaded,
        "rss_mib_after": _rss_mib(),
        "train_seconds": trained.summary.get("train_seconds"),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
