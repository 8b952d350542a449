"""`switchman eval`: load the data, run the plan, print the report (and write its JSON and plot)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..evaluate import CascadeCalibration, EvalPlan, EvalReport, evaluate_table, load_data, plot_report

__all__ = ["eval_command"]


def eval_command(
    plan: EvalPlan,
    *,
    data: Sequence[Path],
    task: str | None = None,
    models: Sequence[str] = (),
    json_path: Path | None = None,
    plot_path: Path | None = None,
    console: Console | None = None,
) -> EvalReport:
    """Evaluate the plan's routers and strategies against baselines; print a table, write JSON and a plot."""
    console = console or Console()
    with console.status("loading data"):
        everything = load_data(data, task=task, models=models, aliases=dict(plan.aliases))
    with console.status("evaluating") as status:
        report = evaluate_table(everything, plan, progress=status.update)
    _print_report(report, console)
    _print_equal_quality(report, console)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report.to_dict(), indent=2))
    if plot_path is not None:
        plot_report(report, plot_path)
    return report


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.1%}" if pct else f"{value:.4f}"


def _print_report(report: EvalReport, console: Console) -> None:
    table = Table(title=f"{report.n_prompts} prompts; best single model {report.best_model}")
    table.add_column("router / baseline", no_wrap=True)
    for col in ("quality", "$/1k", "rel quality", "rel cost", "AIQ", "saved @95%", "saved @100%"):
        table.add_column(col, justify="right")
    for name, result in report.routers.items():
        p, f = result.point, result.frontier
        table.add_row(
            name, _fmt(p.quality), _fmt(p.cost_per_1k), _fmt(p.rel_quality, True), _fmt(p.rel_cost, True),
            _fmt(f.aiq if f else None), _fmt(f.savings_at_95 if f else None, True),
            _fmt(f.savings_at_100 if f else None, True),
        )
    base = report.baselines
    if base is not None:
        for name, p in base.points():
            table.add_row(f"baseline: {name}", _fmt(p.quality), _fmt(p.cost_per_1k), _fmt(p.rel_quality, True),
                          _fmt(p.rel_cost, True), "—", "—", "—")
        for name, f in (("single_model_hull", base.hull_frontier), ("random_mix", base.random_mix)):
            table.add_row(f"baseline: {name}", "", "", "", "", _fmt(f.aiq), _fmt(f.savings_at_95, True),
                          _fmt(f.savings_at_100, True))
    console.print(table)
    for name, result in report.routers.items():
        if result.apgr is not None:
            console.print(f"{name}: APGR {result.apgr:.3f}, CPT(50%) {_fmt(result.cpt50, True)}, "
                          f"CPT(80%) {_fmt(result.cpt80, True)}")


def _print_equal_quality(report: EvalReport, console: Console) -> None:
    for name, result in report.routers.items():
        eq, cal = result.equal_quality, result.calibrated
        if eq is None or not isinstance(cal, CascadeCalibration):
            continue
        console.print(
            f"{name}: threshold {cal.params.threshold:g}, adequate {cal.params.adequate:g}, "
            f"≤{cal.params.max_attempts} attempts (mean {cal.mean_attempts:.2f}, {cal.accepted_on_first_rung:.0%} on "
            f"the first rung); at its quality {result.point.quality:.4f} the single-shot router costs "
            f"${_fmt(eq.single_shot_cost_at_cascade_quality)}/1k vs ${result.point.cost_per_1k:.4f}; at single-shot's "
            f"quality {eq.single_shot_quality:.4f} the cascade costs ${_fmt(eq.cascade_cost_at_single_shot_quality)}/1k "
            f"vs ${eq.single_shot_cost_per_1k:.4f}"
        )
