"""Routing quality and cost on the development data: the numbers in docs/benchmarks.md.

    python benchmarks/bench_routing.py selection   # choices made by 5-fold CV inside the train split
    python benchmarks/bench_routing.py final       # train on train (calibrated inside it), report test
    python benchmarks/bench_routing.py all

Needs ../shared/data (RouterBench and AlpacaEval 2 outcome tables). Writes JSON next to the
markdown it prints (runs/bench_routing/*.json).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

from rich.console import Console

from switchman._offline import eval_command, train_command

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path("runs/bench_routing")
QUIET = Console(file=io.StringIO(), width=200)

# (label, options) compared by CV on the training split of RouterBench and AlpacaEval 2.
SELECTION = [
    ("wordllama-256, knn (k=40, T=0.05)", {"embedder": "wordllama-256", "algorithm": "knn",
                                           "params": ["k=40", "temperature=0.05"]}),
    ("wordllama-256, knn (k=100, T=0.3)", {"embedder": "wordllama-256", "algorithm": "knn",
                                           "params": ["k=100", "temperature=0.3"]}),
    ("wordllama-256, mf", {"embedder": "wordllama-256", "algorithm": "mf"}),
    ("wordllama-256, ensemble", {"embedder": "wordllama-256", "algorithm": "ensemble",
                                 "params": ["knn.k=100", "knn.temperature=0.3"]}),
    ("wordllama-256, knn + task", {"embedder": "wordllama-256", "algorithm": "knn", "use_task": True,
                                   "params": ["k=100", "temperature=0.3"]}),
    ("wordllama-256, mf + task", {"embedder": "wordllama-256", "algorithm": "mf", "use_task": True}),
    ("wordllama-256, knn, tolerance rule", {"embedder": "wordllama-256", "algorithm": "knn", "rule": "tolerance",
                                            "params": ["k=100", "temperature=0.3"]}),
    ("minilm-int8:tail, knn (k=100, T=0.3)", {"embedder": "minilm-int8:tail", "algorithm": "knn",
                                              "params": ["k=100", "temperature=0.3"]}),
    ("minilm-int8:tail, mf", {"embedder": "minilm-int8:tail", "algorithm": "mf"}),
]


def _row(label: str, entry: dict, seconds: float) -> str:
    def pct(v: float | None) -> str:
        return "—" if v is None else f"{v:.1%}"

    return (f"| {label} | {pct(entry['rel_quality'])} | {pct(entry['rel_cost'])} | {entry['aiq']:.4f} | "
            f"{pct(entry['savings_at_95'])} | {pct(entry['savings_at_100'])} | {seconds:.0f} s |")


HEADER = ("| router | calibrated quality (rel. best) | calibrated cost (rel. best) | AIQ | saved @95% | saved @100% | time |\n"
          "|---|---:|---:|---:|---:|---:|---:|")


def selection() -> None:
    for dataset in ("routerbench", "alpacaeval2"):
        print(f"\n### {dataset}: 5-fold CV inside the train split, target quality=0.95\n\n{HEADER}")
        for label, options in SELECTION:
            started = time.perf_counter()
            report = eval_command(data=[DATA / dataset], strategies=["learned"], split="train", cv=5,
                                  console=QUIET, **options)  # type: ignore[arg-type]
            entry = next(iter(report["routers"].values()))
            print(_row(label, entry, time.perf_counter() - started), flush=True)
            (OUT / f"selection-{dataset}-{label.replace(' ', '_').replace(',', '')}.json").write_text(json.dumps(report))


def final(options: dict) -> None:
    routers = {}
    for name, dirs in (("routerbench", ["routerbench"]), ("alpacaeval2", ["alpacaeval2"]),
                       ("both", ["routerbench", "alpacaeval2"])):
        path = OUT / f"router-{name}.safetensors"
        started = time.perf_counter()
        train_command(data=[DATA / d for d in dirs], out=path, console=QUIET, **options)
        routers[name] = (path, time.perf_counter() - started)
    for dataset in ("routerbench", "alpacaeval2"):
        for trained_on in (dataset, "both"):
            path, seconds = routers[trained_on]
            report = eval_command(data=[DATA / dataset], routers=[path], strategies=["cheapest", "random"],
                                  split="test", console=QUIET, json_path=OUT / f"final-{dataset}-{trained_on}.json",
                                  plot_path=OUT / f"final-{dataset}-{trained_on}.png")
            entry = report["routers"][path.stem]
            ref = report["best_model"]
            print(f"\n### {dataset} test split ({report['n_prompts']} prompts), router trained on {trained_on} "
                  f"train split ({seconds:.1f} s incl. embedding); best single model {ref}\n")
            print(HEADER)
            print(_row(f"switchman ({options.get('algorithm', 'knn')})", entry, seconds))
            for base in ("single_model_hull", "random_mix"):
                b = report["baselines"][base]
                print(f"| baseline: {base} | — | — | {b['aiq']:.4f} | "
                      f"{'—' if b['savings_at_95'] is None else format(b['savings_at_95'], '.1%')} | "
                      f"{'—' if b['savings_at_100'] is None else format(b['savings_at_100'], '.1%')} | |")
            o = report["baselines"]["oracle"]
            print(f"| baseline: oracle | {o['rel_quality']:.1%} | {o['rel_cost']:.1%} | | | | |")
            vs = entry["vs_most_expensive"]
            print(f"\nCalibrated point: quality {entry['quality']:.4f}, ${entry['cost_per_1k']:.4f}/1k. "
                  f"Against the most expensive model ({vs['model']}): saved @95% "
                  f"{'—' if vs['savings_at_95'] is None else format(vs['savings_at_95'], '.1%')}, saved @100% "
                  f"{'—' if vs['savings_at_100'] is None else format(vs['savings_at_100'], '.1%')}. "
                  f"Shares: " + ", ".join(f"{m} {s:.0%}" for m, s in sorted(entry['shares'].items(),
                                                                             key=lambda kv: -kv[1])[:4]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["selection", "final", "all"])
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")  # as `switchman` itself does (see _cli._process_setup)
    if not DATA.exists():
        print(f"{DATA} is missing: this benchmark needs the shared outcome data", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    if args.what in ("selection", "all"):
        selection()
    if args.what in ("final", "all"):
        final({"algorithm": "knn", "params": ["k=100", "temperature=0.3"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
