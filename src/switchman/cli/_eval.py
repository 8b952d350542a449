"""`switchman eval`: load the data, run the plan, print the report (and write its JSON and plot)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..evaluate import CascadeCalibration, Decisions, EvalPlan, EvalReport, TargetCalibration, evaluate_table, load_data, plot_report

__all__ = ["eval_command"]


def eval_command(
    plan: EvalPlan,
    *,
    data: Sequence[Path],
    task: str | None = None,
    models: Sequence[str] = (),
    json_path: Path | None = None,
    plot_path: Path | None = None,
    decisions_path: Path | None = None,
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
    if decisions_path is not None:
        write_decisions(report.decisions.values(), decisions_path)
    return report


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.1%}" if pct else f"{value:.4f}"


def _miss(result_calibrated: object) -> str:
    if not isinstance(result_calibrated, TargetCalibration) or result_calibrated.miss is None:
        return "—"
    unit = "pts" if (result_calibrated.target or "").startswith("quality") else "$/1k"
    scale = 100 if unit == "pts" else 1
    return f"{result_calibrated.miss * scale:+.2f} {unit}"


def _print_report(report: EvalReport, console: Console) -> None:
    marked = " — [red]INCLUDES TRAINING PROMPTS (--allow-overlap)[/]" if any(
        "include prompts it was trained on" in w for w in report.warnings) else ""
    table = Table(title=f"{report.n_prompts} prompts; best single model {report.best_model} (chosen on "
                        f"{report.best_model_from}){marked}",
                  caption="quality … vs target: the calibrated knob, fixed before these prompts were seen — what a user "
                          "gets. AIQ and saved @: swept on the evaluated prompts (an upper bound, not a user's number); "
                          "AIQ over [0, the largest cost among the compared curves], as RouterBench's code.")
    table.add_column("router / baseline", no_wrap=True)
    for col in ("quality", "$/1k", "rel quality", "rel cost", "vs target", "AIQ", "saved @95%", "saved @100%"):
        table.add_column(col, justify="right")
    for name, result in report.routers.items():
        p, f = result.point, result.frontier
        table.add_row(
            name, _fmt(p.quality), _fmt(p.cost_per_1k), _fmt(p.rel_quality, True), _fmt(p.rel_cost, True),
            _miss(result.calibrated), _fmt(f.aiq if f else None), _fmt(f.savings_at_95 if f else None, True),
            _fmt(f.savings_at_100 if f else None, True),
        )
    base = report.baselines
    if base is not None:
        for name, p in base.points():
            table.add_row(f"baseline: {name}", _fmt(p.quality), _fmt(p.cost_per_1k), _fmt(p.rel_quality, True),
                          _fmt(p.rel_cost, True), "", "—", "—", "—")
        for name, f in (("single_model_hull", base.hull_frontier), ("random_mix", base.random_mix)):
            table.add_row(f"baseline: {name}", "", "", "", "", "", _fmt(f.aiq), _fmt(f.savings_at_95, True),
                          _fmt(f.savings_at_100, True))
    console.print(table)
    for warning in report.warnings:
        console.print(f"[red]note:[/] {warning}", soft_wrap=True)
    for name, result in report.routers.items():
        if result.apgr is not None:
            console.print(f"{name}: APGR {result.apgr:.3f}, CPT(50%) {_fmt(result.cpt50, True)}, "
                          f"CPT(80%) {_fmt(result.cpt80, True)}")
        if result.placed:
            console.print(f"{name}: placed by public score alone (no outcome data): {', '.join(result.placed)}")
        pick = result.score_pick
        if pick is not None:
            console.print(f"{name}: the best public score within its spend is {pick.model} ({pick.score:g}): quality "
                          f"{pick.point.quality:.4f} at ${pick.point.cost_per_1k:.4f}/1k vs the router's "
                          f"{result.point.quality:.4f} at ${result.point.cost_per_1k:.4f}/1k")


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


def write_decisions(decisions: Iterable[Decisions], path: Path) -> Path:
    """One CSV row per (router, evaluated prompt): the chosen model, its predicted and true quality and cost.

    Mean `quality` and 1000 × mean `cost_usd` per router are the report's quality and $/1k.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["router", "prompt_id", "model", "predicted_quality", "predicted_cost_usd", "quality",
                         "cost_usd"])
        for d in decisions:
            for row in zip(d.prompt_ids, d.models, d.predicted_quality, d.predicted_cost_usd, d.quality, d.cost_usd,
                           strict=True):
                prompt_id, model, pq, pc, q, c = row
                writer.writerow([d.router, prompt_id, model, f"{pq:.6g}", repr(float(pc)), f"{q:.6g}", repr(float(c))])
    return path

