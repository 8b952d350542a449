"""Cost–quality plot of an evaluation report (matplotlib, PNG). Consumes the report; computes nothing."""

from __future__ import annotations

from pathlib import Path

from ._report import EvalReport

__all__ = ["plot_report"]


def plot_report(report: EvalReport, path: str | Path, *, title: str = "switchman eval") -> Path:
    """Draw every router's frontier with the single models, their hull and the oracle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    base = report.baselines
    if base is not None:
        singles = base.models
        ax.scatter([p.cost_per_1k for p in singles.values()], [p.quality for p in singles.values()],
                   color="grey", s=18, label="single models", zorder=3)
        for name, p in singles.items():
            ax.annotate(name.split("/")[-1], (p.cost_per_1k, p.quality), fontsize=6, color="dimgrey",
                        xytext=(3, 2), textcoords="offset points")
        ax.plot([c for c, _ in base.hull], [q for _, q in base.hull], ls="--", color="grey", lw=1,
                label="hull of single models")
        ax.scatter([base.oracle.cost_per_1k], [base.oracle.quality], marker="*", s=120, color="gold",
                   edgecolor="black", label="oracle", zorder=4)
    for name, result in report.routers.items():
        frontier = result.frontier.points if result.frontier is not None else ()
        line, = ax.plot([c for c, _ in frontier], [q for _, q in frontier], lw=1.8, label=f"{name} frontier")
        ax.scatter([result.point.cost_per_1k], [result.point.quality], color=line.get_color(), marker="o", s=40,
                   edgecolor="black", zorder=5, label=f"{name} calibrated")
    ax.set_xscale("log")
    ax.set_xlabel("cost, USD per 1k requests (log scale)")
    ax.set_ylabel("mean quality")
    ax.set_title(f"{title}: {report.n_prompts} prompts")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
