"""Cost–quality plot of an evaluation report (matplotlib, PNG). Consumes the report; computes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_report"]


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """Draw every router's frontier with the single models, their hull and the oracle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    baselines = report["baselines"]
    singles = {k.removeprefix("model:"): v for k, v in baselines.items() if k.startswith("model:")}
    ax.scatter([v["cost_per_1k"] for v in singles.values()], [v["quality"] for v in singles.values()],
               color="grey", s=18, label="single models", zorder=3)
    for name, v in singles.items():
        ax.annotate(name.split("/")[-1], (v["cost_per_1k"], v["quality"]), fontsize=6, color="dimgrey",
                    xytext=(3, 2), textcoords="offset points")
    hull = baselines["single_model_hull"]["hull"]
    ax.plot([c for c, _ in hull], [q for _, q in hull], ls="--", color="grey", lw=1, label="hull of single models")
    oracle = baselines["oracle"]
    ax.scatter([oracle["cost_per_1k"]], [oracle["quality"]], marker="*", s=120, color="gold", edgecolor="black",
               label="oracle", zorder=4)
    for name, entry in report["routers"].items():
        frontier = entry["frontier"]
        line, = ax.plot([c for c, _ in frontier], [q for _, q in frontier], lw=1.8, label=f"{name} frontier")
        ax.scatter([entry["cost_per_1k"]], [entry["quality"]], color=line.get_color(), marker="o", s=40,
                   edgecolor="black", zorder=5, label=f"{name} calibrated")
    ax.set_xscale("log")
    ax.set_xlabel("cost, USD per 1k requests (log scale)")
    ax.set_ylabel("mean quality")
    ax.set_title(f"{report.get('title', 'switchman eval')}: {report['n_prompts']} prompts")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
