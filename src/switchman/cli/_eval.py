"""`switchman eval`: load the data, run the plan, print the report (and write its JSON and plot)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.console import Console

from ..evaluate import (
    CascadeCalibration,
    Decisions,
    EvalPlan,
    EvalReport,
    Frontier,
    OperatingPoint,
    TargetCalibration,
    evaluate_table,
    load_data,
    plot_report,
)
from ._outputs import check_outputs
from ._progress import ProgressBars
from ._tables import Field, print_table

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
    check_outputs(json=json_path, plot=plot_path, decisions=decisions_path)
    console = console or Console()
    with console.status("loading data"):
        everything = load_data(data, task=task, models=models, aliases=dict(plan.aliases))
    with ProgressBars(console) as progress:
        report = evaluate_table(everything, plan, progress=progress)
    _print_report(report, console)
    _print_equal_quality(report, console)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report.to_dict(), indent=2))
    if plot_path is not None:
        dataset = ", ".join(Path(d).name for d in data) + (f" ({task})" if task else "")
        plot_report(report, plot_path, dataset=dataset)
    if decisions_path is not None:
        write_decisions(report.decisions.values(), decisions_path)
    return report


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.1%}" if pct else f"{value:.4f}"


_FIELDS = (
    Field("router", numeric=False), Field("quality"), Field("$/1k"), Field("rel quality"),
    Field("rel cost", optional=True), Field("vs target"), Field("AIQ*"), Field("saved @95%*"),
    Field("saved @100%*", optional=True),
)
_BASELINE_NAMES = {"single_model_hull": "hull of single models", "random_mix": "random mix"}


def _same_point(a: OperatingPoint, b: OperatingPoint) -> bool:
    return math.isclose(a.quality, b.quality, rel_tol=1e-9, abs_tol=1e-12) and \
        math.isclose(a.cost_per_1k, b.cost_per_1k, rel_tol=1e-9, abs_tol=1e-12)


def _miss(calibrated: object) -> str:
    """Achieved − target: points of relative quality, or $ per 1k for a cost target."""
    if not isinstance(calibrated, TargetCalibration) or calibrated.miss is None:
        return "—"
    if (calibrated.target or "").startswith("quality"):
        return f"{calibrated.miss * 100:+.2f} pts"
    return f"{calibrated.miss:+.4f} $/1k"


def _point_row(name: str, p: OperatingPoint, f: Frontier | None, miss: str = "") -> list[str]:
    return [name, _fmt(p.quality), _fmt(p.cost_per_1k), _fmt(p.rel_quality, True), _fmt(p.rel_cost, True), miss,
            _fmt(f.aiq if f else None), _fmt(f.savings_at_95 if f else None, True),
            _fmt(f.savings_at_100 if f else None, True)]


def _rows(report: EvalReport) -> tuple[list[list[str]], int]:
    """One row per distinct result (the routers first, then the baselines), and the last routers' row index.

    A strategy that lands on a single model's point shares its row, and the random baseline gives
    way to a random strategy the user asked for.
    """
    base = report.baselines
    points = dict(base.points()) if base is not None else {}
    shown: set[str] = {"random"} if "random" in report.routers else set()
    rows: list[list[str]] = []
    for name, result in report.routers.items():
        label = name
        if result.frontier is None:
            twin = next((b for b, q in points.items() if b.startswith("model:") and _same_point(result.point, q)), None)
            if twin is not None:
                label = f"{name} (= {twin})"
                shown.add(twin)
        rows.append(_point_row(label, result.point, result.frontier, _miss(result.calibrated)))
    routers_end = len(rows) - 1
    if base is not None:
        rows += [[*_point_row(name, p, None)[:5], "", "", "", ""] for name, p in base.points() if name not in shown]
        rows += [[_BASELINE_NAMES[name], "", "", "", "", "", _fmt(f.aiq), _fmt(f.savings_at_95, True),
                  _fmt(f.savings_at_100, True)]
                 for name, f in (("single_model_hull", base.hull_frontier), ("random_mix", base.random_mix))]
    return rows, routers_end


def _legend(report: EvalReport) -> list[str]:
    return [
        f"quality: mean on the {report.n_prompts} prompts · $/1k: USD per 1,000 requests · rel: against "
        f"{report.best_model} (the best single model, chosen on {report.best_model_from}) · below the rule: baselines,"
        " model:NAME = that model alone",
        "quality, $/1k, vs target (achieved − target): the router's calibrated knob, fixed before these prompts were "
        "seen — what a user gets",
        "*: swept on the evaluated prompts, an upper bound, not a user's number",
        "AIQ: mean quality along the cost–quality frontier over [0, the largest cost among the compared curves], as "
        "RouterBench's code",
        "saved @95% / @100%: cost saved against the best single model at 95% / 100% of its quality, on the frontier "
        "· —: no frontier",
    ]


def _print_report(report: EvalReport, console: Console) -> None:
    where = f"{report.cv}-fold cross-validation" if report.cv else f"split {report.split}" if report.split else "all"
    marked = " — INCLUDES PROMPTS A ROUTER WAS TRAINED ON (--allow-overlap)" if any(
        "include prompts it was trained on" in w for w in report.warnings) else ""
    title = f"{report.n_prompts} prompts ({where}); best single model {report.best_model}{marked}"
    rows, routers_end = _rows(report)
    print_table(console, title, _FIELDS, rows, sections={routers_end})
    for line in _legend(report):
        console.print(line, style="dim", markup=False, highlight=False)
    for warning in report.warnings:
        console.print(f"note: {warning}", style="red", markup=False, soft_wrap=True)
    for name, result in report.routers.items():
        if result.apgr is not None:
            console.print(f"{name}: APGR {result.apgr:.3f}, CPT(50%) {_fmt(result.cpt50, True)}, "
                          f"CPT(80%) {_fmt(result.cpt80, True)}")
        if result.placed:
            console.print(f"{name}: placed by public score alone (no outcome data): {', '.join(result.placed)}",
                          markup=False)
        pick = result.score_pick
        if pick is not None:
            console.print(f"{name}: the best public score within its spend is {pick.model} ({pick.score:g}): quality "
                          f"{pick.point.quality:.4f} at ${pick.point.cost_per_1k:.4f}/1k vs the router's "
                          f"{result.point.quality:.4f} at ${result.point.cost_per_1k:.4f}/1k", markup=False)


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
            for prompt_id, model, pq, pc, q, c in zip(d.prompt_ids, d.models, d.predicted_quality,
                                                      d.predicted_cost_usd, d.quality, d.cost_usd, strict=True):
                writer.writerow([d.router, prompt_id, model, f"{pq:.6g}", repr(float(pc)), f"{q:.6g}", repr(float(c))])
    return path
