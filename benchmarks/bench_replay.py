"""Replay speed: a 10k-request SQLite ledger with synthetic prompts, replayed by a trained router.

    python benchmarks/bench_replay.py [--requests 10000] [--router FILE]

Builds the ledger (prompts stored, as with `server.store_prompts: true`) and, without --router, a
small kNN router on synthetic outcomes; then times `replay_command` end to end: reading the
ledger, embedding every prompt, predicting, selecting and summing. The budget is 30 s for 10k.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from switchman.cli._replay import replay_command
from switchman.evaluate import OutcomeTable
from switchman.learn import TrainedRouter
from switchman.learn import TrainSettings, train_router
from switchman.ledger import Ledger, LedgerRecord

TOPICS = ("invoice", "refund", "python", "kubernetes", "poem", "contract", "diagnosis", "recipe", "tax", "sql")
VERBS = ("Summarise", "Explain", "Classify", "Translate to French", "Fix the bug in", "Write tests for",
         "Extract the dates from", "Compare", "Draft a reply to", "List the risks of")
MODELS = {"small": (0.15, 0.6), "medium": (1.0, 4.0), "large": (5.0, 15.0)}


def prompt(rng: random.Random) -> str:
    words = " ".join(rng.choice(TOPICS) for _ in range(rng.randint(3, 40)))
    return f"{rng.choice(VERBS)} this {rng.choice(TOPICS)} text: {words}"


def synthetic_router(rng: random.Random, n: int = 600) -> TrainedRouter:
    prompts = [prompt(rng) for _ in range(n)]
    models = tuple(MODELS)
    hard = np.array([("Fix" in p or "tests" in p or "risks" in p) for p in prompts], dtype=float)
    quality = np.column_stack([1 - 0.8 * hard, 1 - 0.3 * hard, np.ones(n)])
    tokens_in = np.array([[float(len(p.split()) * 1.3)] * 3 for p in prompts])
    tokens_out = np.tile([120.0, 150.0, 180.0], (n, 1)) + rng.random() * 10
    prices = np.array([MODELS[m] for m in models])
    cost = (tokens_in * prices[:, 0] + tokens_out * prices[:, 1]) / 1e6
    table = OutcomeTable(prompt_ids=tuple(f"t{i}" for i in range(n)), prompts=tuple(prompts), tasks=(None,) * n,
                         splits=("train",) * n, models=models, quality=quality, input_tokens=tokens_in,
                         output_tokens=tokens_out, cost_usd=cost)
    return train_router(table, TrainSettings(algorithm="knn"), use_cache=False)


def build_ledger(url: str, n: int, rng: random.Random) -> None:
    ledger = Ledger(url, batch_size=2000)
    now = time.time()
    for i in range(n):
        model = rng.choice(tuple(MODELS))
        p = prompt(rng)
        tin, tout = int(len(p.split()) * 1.3) + 20, rng.randint(50, 400)
        price_in, price_out = MODELS[model]
        ledger.record(LedgerRecord(time=now - rng.random() * 86400, request_id=f"r{i}", model=model, prompt=p,
                                   input_tokens=tin, output_tokens=tout,
                                   cost_usd=(tin * price_in + tout * price_out) / 1e6))
    ledger.close_sync()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--router", type=Path)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/ledger.sqlite3"
        started = time.perf_counter()
        build_ledger(url, args.requests, rng)
        print(f"ledger: {args.requests} requests written in {time.perf_counter() - started:.1f}s")
        router = args.router or synthetic_router(rng).save(Path(tmp) / "router.safetensors")
        wall, cpu = time.perf_counter(), time.process_time()
        report = replay_command(router=router, ledger=url, since="2d", console=Console(file=io.StringIO()))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"replay: {report['requests']} requests in {wall:.2f}s wall, {cpu:.2f}s CPU "
          f"({1000 * wall / max(report['requests'], 1):.3f} ms/request); budget 30 s")
    print(f"router share {report['router']['share']}, cost ${report['router']['cost_usd']:.4f} "
          f"vs actual ${report['actual']['cost_usd']:.4f}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
