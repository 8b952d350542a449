"""Cascade vs the single-shot learned router on the development data (test splits), as a markdown table.

    python benchmarks/bench_cascade.py            # RouterBench and AlpacaEval 2
    switchman eval --data ../shared/data/routerbench --strategy cascade   # the same numbers for one dataset

Each cascade is the routing core's generator driven with the outcome table's known answers: cost
counts every attempt, quality is the served answer's. Everything is fitted and calibrated on the
train split (target quality=0.95 of the best single model); the oracle check is an upper bound.
Writes the reports as JSON to runs/bench_cascade/.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from switchman.cli._eval import eval_command
from switchman.evaluate import EvalPlan

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path("runs/bench_cascade")
DATASETS = ("routerbench", "alpacaeval2")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _money(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def rows(dataset: str, report: dict[str, Any]) -> list[str]:
    """Markdown rows for one dataset's report."""
    out = []
    best = report["baselines"][f"model:{report['best_model']}"]
    out.append(f"| {dataset} | best single model ({report['best_model']}) | {best['quality']:.4f} | "
               f"{best['cost_per_1k']:.4f} | 100.0% | — | — | — | 1 | — |")
    single = report["routers"]["learned (single-shot)"]
    for name, entry in report["routers"].items():
        cal = entry.get("calibrated") or {}
        attempts = f"{cal['mean_attempts']:.2f}" if "mean_attempts" in cal else "1"
        eq = entry.get("equal_quality")
        at_equal = (f"{_money(eq['cascade_cost_at_single_shot_quality'])} vs {single['cost_per_1k']:.4f}"
                    if eq else "—")
        out.append(
            f"| {dataset} | {name} | {entry['quality']:.4f} | {entry['cost_per_1k']:.4f} | "
            f"{_pct(entry['rel_quality'])} | {entry['aiq']:.4f} | {_pct(entry['savings_at_95'])} | "
            f"{_pct(entry['savings_at_100'])} | {attempts} | {at_equal} |"
        )
    return out


def main() -> int:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")  # as `switchman` itself does (see switchman.cli._app._process_setup)
    if not DATA.is_dir():
        print(f"no data at {DATA}", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    lines = [
        ("| data | router | quality | $/1k (every attempt) | rel. quality | AIQ | saved @95% | saved @100% | "
         "attempts | cascade $/1k at single-shot's quality vs single-shot |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for dataset in DATASETS:
        started = time.perf_counter()
        report = eval_command(EvalPlan(strategies=("cascade",)), data=[DATA / dataset],
                              json_path=OUT / f"{dataset}.json", console=Console(file=io.StringIO(), width=200)).to_dict()
        lines += rows(dataset, report)
        print(f"{dataset}: {time.perf_counter() - started:.1f}s", file=sys.stderr)
    print("\n".join(lines))
    for dataset in DATASETS:
        report = json.loads((OUT / f"{dataset}.json").read_text())
        for name, entry in report["routers"].items():
            if "equal_quality" in entry:
                cal, eq = entry["calibrated"], entry["equal_quality"]
                print(f"\n- {dataset}, {name}: threshold {cal['threshold']:g}, adequate {cal['adequate']:g}, "
                      f"≤{cal['max_attempts']} attempts, {cal['accepted_on_first_rung']:.0%} accepted on the first "
                      f"rung; single-shot at the cascade's quality ({entry['quality']:.4f}) costs "
                      f"{_money(eq['single_shot_cost_at_cascade_quality'])}/1k vs the cascade's "
                      f"{entry['cost_per_1k']:.4f}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
