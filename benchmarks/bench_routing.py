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

from switchman.cli._eval import eval_command
from switchman.cli._train import train_command
from switchman.evaluate import EvalPlan
from switchman.learn import train_settings

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
            plan = EvalPlan(strategies=("learned",), split="train", cv=5, settings=train_settings(**options))
            report = eval_command(plan, data=[DATA / dataset], console=QUIET).to_dict()
            entry = next(iter(report["routers"].values()))
            print(_row(label, entry, time.perf_counter() - started), flush=True)
            (OUT / f"selection-{dataset}-{label.replace(' ', '_').replace(',', '')}.json").write_text(json.dumps(report))


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def final(variants: dict[str, dict]) -> None:
    """Train each variant on each train split (and on both together), report each test split."""
    routers: dict[tuple[str, str], tuple[Path, float]] = {}
    for label, options in variants.items():
        for name, dirs in (("routerbench", ["routerbench"]), ("alpacaeval2", ["alpacaeval2"]),
                           ("both", ["routerbench", "alpacaeval2"])):
            path = OUT / f"router-{label}-{name}.safetensors"
            started = time.perf_counter()
            train_command(data=[DATA / d for d in dirs], out=path, settings=train_settings(**options), console=QUIET)
            routers[(label, name)] = (path, time.perf_counter() - started)
    for dataset in ("routerbench", "alpacaeval2"):
        paths = [routers[(label, trained_on)][0] for label in variants for trained_on in (dataset, "both")]
        plan = EvalPlan(routers=tuple(paths), strategies=("cheapest", "random"), split="test")
        report = eval_command(plan, data=[DATA / dataset], console=QUIET, json_path=OUT / f"final-{dataset}.json",
                              plot_path=OUT / f"final-{dataset}.png").to_dict()
        print(f"\n### {dataset} test split ({report['n_prompts']} prompts); best single model "
              f"{report['best_model']}, most expensive {report['most_expensive_model']}\n")
        print(HEADER)
        for label in variants:
            for trained_on in (dataset, "both"):
                path, seconds = routers[(label, trained_on)]
                print(_row(f"{label}, trained on {trained_on}", report["routers"][path.stem], seconds))
        for base in ("cheapest", "random"):
            e = report["routers"][base]
            print(f"| strategy: {base} | {_pct(e['rel_quality'])} | {_pct(e['rel_cost'])} | | | | |")
        for base in ("single_model_hull", "random_mix"):
            b = report["baselines"][base]
            print(f"| baseline: {base} | — | — | {b['aiq']:.4f} | {_pct(b['savings_at_95'])} | "
                  f"{_pct(b['savings_at_100'])} | |")
        o = report["baselines"]["oracle"]
        print(f"| baseline: oracle | {_pct(o['rel_quality'])} | {_pct(o['rel_cost'])} | | | | |")
        print(f"\nAgainst the most expensive model ({report['most_expensive_model']}), and where the "
              "calibrated routers sent their calls:\n")
        for label in variants:
            for trained_on in (dataset, "both"):
                entry = report["routers"][routers[(label, trained_on)][0].stem]
                vs = entry["vs_most_expensive"]
                shares = ", ".join(f"{m} {v:.0%}" for m, v in sorted(entry["shares"].items(), key=lambda kv: -kv[1])[:4])
                print(f"- {label}, trained on {trained_on}: saved @95% {_pct(vs['savings_at_95'])}, "
                      f"saved @100% {_pct(vs['savings_at_100'])}; calibrated quality {entry['quality']:.4f} at "
                      f"${entry['cost_per_1k']:.4f}/1k; shares {shares}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["selection", "final", "all"])
    args = parser.parse_args()
    import numpy  # noqa: F401  (load BLAS first: the limit applies to libraries already loaded)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")  # as `switchman` itself does (see switchman.cli._app._process_setup)
    if not DATA.exists():
        print(f"{DATA} is missing: this benchmark needs the shared outcome data", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    if args.what in ("selection", "all"):
        selection()
    if args.what in ("final", "all"):
        final({"knn": {"algorithm": "knn"}, "mf": {"algorithm": "mf"}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
