"""Task-type detection: accuracy on the labelled data that exists, and per-prompt latency.

    python benchmarks/bench_tasks.py [--data ../shared/data] [--json out.json]

Labels: only RouterBench's `task` column names a task type. The mapping, by what each benchmark
asks the model to produce (the definition `switchman.routing._tasks` uses):

    mbpp           → code            "Write a function to ..."
    arc-challenge  → classification  few-shot multiple choice, "Print only a single choice from A/B/C/D"
    winogrande     → classification  few-shot two-way choice, "Print only a single choice from A/B"

ARC and WinoGrande need knowledge and commonsense reasoning, but the step's output is one label from
a closed set, which is what makes it cheap to check and cheap to route; `reasoning` is kept for
derived answers (arithmetic, proofs, puzzles). AlpacaEval's subsets (helpful_base, koala, oasst,
selfinstruct, vicuna) are sources, not task types: the script reports the detected distribution
there, without an accuracy. The data is read from disk; nothing is copied into the repository.
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip
import json
import statistics
import time
from pathlib import Path

from switchman._tokens import count_tokens_for_routing
from switchman.routing import RouteRequest
from switchman.routing import TASKS, detect_task

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MAPPING = {"mbpp": "code", "arc-challenge": "classification", "winogrande": "classification"}


def _rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _detect_timed(requests: list[RouteRequest], repeats: int) -> tuple[list[str], list[float], list[float]]:
    """Labels, and per-call wall and CPU (thread) time in µs: a loaded machine inflates only the first."""
    labels = [detect_task(r) for r in requests]  # warm the regex engine
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(repeats):
        for request in requests:
            started, started_cpu = time.perf_counter_ns(), time.thread_time_ns()
            detect_task(request)
            cpu.append((time.thread_time_ns() - started_cpu) / 1000.0)
            wall.append((time.perf_counter_ns() - started) / 1000.0)
    return labels, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    rb = _rows(args.data / "routerbench" / "prompts.csv.gz")
    alpaca = _rows(args.data / "alpacaeval2" / "prompts.csv.gz")
    build = RouteRequest.from_prompt
    rb_requests = [build(r["prompt"], count_tokens=count_tokens_for_routing) for r in rb]
    al_requests = [build(r["prompt"], count_tokens=count_tokens_for_routing) for r in alpaca]
    predicted, times, cpu_times = _detect_timed(rb_requests + al_requests, args.repeats)
    rb_pred, al_pred = predicted[: len(rb)], predicted[len(rb):]

    truth = [MAPPING[r["task"]] for r in rb]
    confusion: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    per_source: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for row, t, p in zip(rb, truth, rb_pred, strict=True):
        confusion[t][p] += 1
        per_source[row["task"]][str(p == t)] += 1
    correct = sum(t == p for t, p in zip(truth, rb_pred, strict=True))
    quantiles = statistics.quantiles(times, n=100)
    cpu_q = statistics.quantiles(cpu_times, n=100)
    result = {
        "prompts": len(rb),
        "accuracy": correct / len(rb),
        "accuracy_per_class": {t: c[t] / sum(c.values()) for t, c in confusion.items()},
        "accuracy_per_source": {s: c["True"] / sum(c.values()) for s, c in per_source.items()},
        "confusion": {t: dict(c) for t, c in confusion.items()},
        "alpacaeval_detected": dict(collections.Counter(al_pred).most_common()),
        "latency_us": {"p50": quantiles[49], "p99": quantiles[98], "max": max(times), "n": len(times)},
        "cpu_us": {"p50": cpu_q[49], "p99": cpu_q[98], "max": max(cpu_times)},
    }
    print(f"RouterBench task accuracy: {result['accuracy']:.3f} over {len(rb)} prompts")
    for source, acc in result["accuracy_per_source"].items():
        print(f"  {source:14} → {MAPPING[source]:15} {acc:.3f}")
    print("confusion (rows: label, columns: detected):")
    print("  " + " " * 15 + " ".join(f"{t[:8]:>8}" for t in TASKS))
    for label, counts in confusion.items():
        print(f"  {label:15}" + " ".join(f"{counts.get(t, 0):>8}" for t in TASKS))
    print(f"AlpacaEval 2 detected (no labels): {result['alpacaeval_detected']}")
    lat = result["latency_us"]
    print(f"detection latency per prompt: p50 {lat['p50']:.1f} µs, p99 {lat['p99']:.1f} µs, "
          f"max {lat['max']:.1f} µs (n={lat['n']}, wall)")
    cpu = result["cpu_us"]
    print(f"detection CPU time per prompt: p50 {cpu['p50']:.1f} µs, p99 {cpu['p99']:.1f} µs, max {cpu['max']:.1f} µs")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
