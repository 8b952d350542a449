"""Cost–quality plot of an evaluation report (matplotlib, PNG). Consumes the report; computes nothing.

Title: the data and split it was measured on. Each router's frontier and the point it was
calibrated to; a dotted line at each quality target; the single models, their hull, the oracle.
Only what is drawn has a legend entry, and the legend sits beside the axes, clear of the points.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .._exceptions import ConfigError
from ..learn import parse_target
from ._report import EvalReport, TargetCalibration

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["draw_report", "plot_report", "plot_title", "quality_targets"]


def plot_title(report: EvalReport, dataset: str | None = None) -> str:
    """`routerbench (mbpp): split test, 128 prompts`."""
    where = f"{report.cv}-fold cross-validation" if report.cv else f"split {report.split}" if report.split else \
        "all prompts"
    return f"{dataset or 'switchman eval'}: {where}, {report.n_prompts} prompts"


def quality_targets(report: EvalReport) -> list[float]:
    """The quality targets the routers were calibrated to, as fractions of the best model's quality."""
    found: list[float] = []
    for result in report.routers.values():
        calibrated = result.calibrated
        if not isinstance(calibrated, TargetCalibration) or not calibrated.target:
            continue
        for text in calibrated.target.split(","):
            try:
                target = parse_target(text)
            except ConfigError:
                continue
            if target.kind == "quality" and target.value not in found:
                found.append(target.value)
    return found


def plot_report(report: EvalReport, path: str | Path, *, title: str | None = None, dataset: str | None = None) -> Path:
    """Draw every router's frontier and calibrated point with the baselines and the quality targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    draw_report(ax, report, title=title or plot_title(report, dataset))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")  # the legend beside the axes is kept in the picture
    plt.close(fig)
    return path


def draw_report(ax: Axes, report: EvalReport, *, title: str) -> None:
    """Draw the report on `ax`, its legend beside the axes."""
    base = report.baselines
    if base is not None:
        singles = base.models
        ax.scatter([p.cost_per_1k for p in singles.values()], [p.quality for p in singles.values()],
                   color="grey", s=18, label="single models", zorder=3)
        for name, p in singles.items():
            ax.annotate(name.split("/")[-1], (p.cost_per_1k, p.quality), fontsize=6, color="dimgrey",
                        xytext=(3, 2), textcoords="offset points")
        if len(base.hull) >= 2:
            ax.plot([c for c, _ in base.hull], [q for _, q in base.hull], ls="--", color="grey", lw=1,
                    label="hull of single models")
        ax.scatter([base.oracle.cost_per_1k], [base.oracle.quality], marker="*", s=120, color="gold",
                   edgecolor="black", label="oracle", zorder=4)
        best = singles.get(report.best_model)
        if best is not None:
            for fraction in quality_targets(report):
                ax.axhline(fraction * best.quality, ls=":", lw=1.2, color="firebrick",
                           label=f"target: {fraction:.0%} of {report.best_model.split('/')[-1]}")
    for n, (name, result) in enumerate(report.routers.items()):
        color = f"C{n}"  # one colour per router, for its line and its point
        frontier = result.frontier.points if result.frontier is not None else ()
        if len(frontier) >= 2:
            ax.plot([c for c, _ in frontier], [q for _, q in frontier], lw=1.8, color=color, label=f"{name} frontier")
        calibrated = result.calibrated is not None
        ax.scatter([result.point.cost_per_1k], [result.point.quality], color=color, marker="o" if calibrated else "D",
                   s=40, edgecolor="black", zorder=5, label=f"{name} calibrated" if calibrated else name)
    ax.set_xscale("log")
    ax.set_xlabel("cost, USD per 1k requests (log scale)")
    ax.set_ylabel("mean quality")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
